//! Port implementations. `local`: embedded backends for the CLI and tests. `aws`: DynamoDB,
//! SQS and S3 (the only code naming `aws_sdk_*`).

pub mod aws;
pub mod local;
