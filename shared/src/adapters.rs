//! Port implementations. `local`: embedded backends for the CLI and tests. `aws`: DynamoDB,
//! SQS and S3 (the only code naming `aws_sdk_*`). `limits`: the AWS limits both honour.

pub mod aws;
pub mod limits;
pub mod local;
