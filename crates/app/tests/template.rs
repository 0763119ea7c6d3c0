//! Reliability and security settings of `template.yaml`, read from the template itself so a
//! change that breaks them fails here (the offline SAM transform + cfn-lint in CI check syntax
//! and references; this checks intent).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::config::vars;
use pixpress_domain::model::RequestStatus;
use pixpress_test_support::manifest_dir;
use serde_yaml_ng::Value;

fn template() -> Value {
    let path = format!("{}/../../template.yaml", manifest_dir());
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    &t["Resources"][name]
}

fn props<'a>(t: &'a Value, name: &str) -> &'a Value {
    &resource(t, name)["Properties"]
}

fn number(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v:?}"))
}

/// `!Ref X` as parsed: a tagged scalar.
fn ref_target(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(t) if t.tag == "Ref" || t.tag == "!Ref" => t.value.as_str(),
        _ => None,
    }
}

fn functions(t: &Value) -> Vec<(&str, &Value)> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(k, r)| (k.as_str().unwrap(), r))
        .collect()
}

#[test]
fn rows_queue_visibility_is_at_least_six_times_the_worker_timeout() {
    let t = template();
    let timeout = number(&props(&t, "RowWorkerFunction")["Timeout"]);
    let visibility = number(&props(&t, "RowsQueue")["VisibilityTimeout"]);
    assert!(
        visibility >= 6 * timeout,
        "visibility {visibility} s < 6 × {timeout} s"
    );
}

#[test]
fn rows_queue_has_a_dead_letter_queue_fed_by_the_same_max_receive_count_as_the_worker() {
    let t = template();
    let redrive = &props(&t, "RowsQueue")["RedrivePolicy"];
    assert_eq!(
        ref_target(&redrive["maxReceiveCount"]),
        Some("MaxReceiveCount")
    );
    assert!(number(&t["Parameters"]["MaxReceiveCount"]["MinValue"]) >= 5);
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        ref_target(&env[vars::MAX_RECEIVE_COUNT]),
        Some("MaxReceiveCount")
    );
    let dlq = number(&props(&t, "RowsDeadLetterQueue")["MessageRetentionPeriod"]);
    let source = number(&props(&t, "RowsQueue")["MessageRetentionPeriod"]);
    assert!(
        dlq > source,
        "DLQ retention {dlq} s must exceed the source's {source} s"
    );
}

#[test]
fn worker_reports_batch_item_failures_with_bounded_concurrency() {
    let t = template();
    let event = &props(&t, "RowWorkerFunction")["Events"]["Rows"];
    assert_eq!(event["Type"], "SQS");
    let p = &event["Properties"];
    assert_eq!(p["FunctionResponseTypes"][0], "ReportBatchItemFailures");
    assert_eq!(
        ref_target(&p["ScalingConfig"]["MaximumConcurrency"]),
        Some("WorkerMaxConcurrency")
    );
    assert!(number(&p["BatchSize"]) <= 10);
}

/// `true` when `event` matches an event-filtering `pattern` (Lambda event filtering: every
/// key of the pattern must be in the event; a leaf array lists accepted values, or
/// `{"exists": true}`). The subset the template's filters use.
fn matches_pattern(pattern: &serde_json::Value, event: &serde_json::Value) -> bool {
    match pattern {
        serde_json::Value::Object(keys) => keys.iter().all(|(key, sub)| match event.get(key) {
            Some(value) => matches_pattern(sub, value),
            None => false,
        }),
        serde_json::Value::Array(accepted) => accepted.iter().any(|a| match a {
            serde_json::Value::Object(rule) => rule.get("exists") == Some(&serde_json::json!(true)),
            value => value == event,
        }),
        _ => false,
    }
}

/// What DynamoDB streams for a request item (`NEW_AND_OLD_IMAGES`).
fn meta_record(event_name: &str, old: Option<&str>, new: &str) -> serde_json::Value {
    let image = |status: &str| serde_json::json!({"pk": {"S": "REQ#r-1"}, "sk": {"S": "META"}, "status": {"S": status}});
    let mut dynamodb = serde_json::json!({
        "Keys": {"pk": {"S": "REQ#r-1"}, "sk": {"S": "META"}},
        "NewImage": image(new),
    });
    if let Some(old) = old {
        dynamodb["OldImage"] = image(old);
    }
    serde_json::json!({"eventName": event_name, "dynamodb": dynamodb})
}

/// A request created terminal — a catalogue s3-ingest rejects is written `FAILED` — reaches the
/// notifier (its webhook), as does one entering a terminal status; a replay does not.
#[test]
fn the_notifier_filter_passes_requests_entering_or_created_in_a_terminal_status() {
    let t = template();
    let event =
        &props(&t, "CompletionNotifierFunction")["Events"]["RequestCompleted"]["Properties"];
    let filters: Vec<serde_json::Value> = event["FilterCriteria"]["Filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| serde_json::from_str(f["Pattern"].as_str().unwrap()).unwrap())
        .collect();
    let passes = |record: serde_json::Value| filters.iter().any(|f| matches_pattern(f, &record));
    assert!(passes(meta_record("INSERT", None, "FAILED")));
    assert!(passes(meta_record(
        "MODIFY",
        Some("PROCESSING"),
        "COMPLETED"
    )));
    assert!(passes(meta_record("MODIFY", Some("PENDING"), "CANCELLED")));
    assert!(!passes(meta_record("INSERT", None, "PENDING")));
    assert!(!passes(meta_record(
        "MODIFY",
        Some("COMPLETED"),
        "COMPLETED"
    )));
    assert!(!passes(meta_record(
        "MODIFY",
        Some("PENDING"),
        "PROCESSING"
    )));
}

#[test]
fn notifier_sees_only_the_request_item_entering_a_terminal_status() {
    let t = template();
    let event =
        &props(&t, "CompletionNotifierFunction")["Events"]["RequestCompleted"]["Properties"];
    let pattern: serde_json::Value = serde_json::from_str(
        event["FilterCriteria"]["Filters"][0]["Pattern"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let d = &pattern["dynamodb"];
    assert_eq!(d["Keys"]["sk"]["S"], serde_json::json!(["META"]));
    let statuses = |v: &serde_json::Value| -> Vec<RequestStatus> {
        serde_json::from_value(v.clone()).unwrap()
    };
    let new = statuses(&d["NewImage"]["status"]["S"]);
    let old = statuses(&d["OldImage"]["status"]["S"]);
    assert!(new.iter().all(|s| s.is_terminal()) && new.len() == 4);
    assert!(new.contains(&RequestStatus::Cancelled));
    assert!(old.iter().all(|s| !s.is_terminal()) && old.len() == 2);
    assert_eq!(event["BisectBatchOnFunctionError"], true);
    // The handler reports the record that failed; without this the response is ignored and
    // the whole batch is retried.
    assert_eq!(
        event["FunctionResponseTypes"][0], "ReportBatchItemFailures",
        "the notifier's partial batch response needs the mapping's response type"
    );
    assert!(number(&event["MaximumRetryAttempts"]) <= 10);
    assert!(number(&event["MaximumRecordAgeInSeconds"]) <= 86_400);
    assert!(!event["DestinationConfig"]["OnFailure"]["Destination"].is_null());
    let table = props(&t, "RequestsTable");
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"],
        "NEW_AND_OLD_IMAGES"
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"],
        pixpress_domain::item::TTL_ATTRIBUTE
    );
}

#[test]
fn bucket_is_private_encrypted_and_tls_only() {
    let t = template();
    let bucket = props(&t, "DataBucket");
    let block = &bucket["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting], true, "{setting}");
    }
    assert!(!bucket["BucketEncryption"].is_null());
    let statements = &props(&t, "DataBucketPolicy")["PolicyDocument"]["Statement"];
    assert_eq!(statements[0]["Effect"], "Deny");
    assert_eq!(
        statements[0]["Condition"]["Bool"]["aws:SecureTransport"],
        "false"
    );
}

#[test]
fn functions_are_arm64_rust_builds_of_existing_binaries_with_least_privilege() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"][0], "arm64");
    assert_eq!(globals["CodeUri"], ".");
    let mut binaries = Vec::new();
    for (name, function) in functions(&t) {
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{name}"
        );
        let binary = function["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap();
        let manifest = format!("{}/../../functions/{binary}/Cargo.toml", manifest_dir());
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|_| panic!("{name}: no crate for binary {binary}"));
        assert!(
            text.contains(&format!("name = \"{binary}\"")),
            "{name}: {manifest} has no bin {binary}"
        );
        binaries.push(binary.to_owned());
        for policy in function["Properties"]["Policies"].as_sequence().unwrap() {
            for statement in policy["Statement"].as_sequence().unwrap() {
                let actions: Vec<&str> = statement["Action"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                // BatchWriteItem writes unconditionally; every write here is conditional.
                for forbidden in [
                    "dynamodb:Scan",
                    "dynamodb:BatchWriteItem",
                    "s3:DeleteObject",
                    "s3:PutObjectAcl",
                    "*",
                ] {
                    assert!(!actions.contains(&forbidden), "{name} may not {forbidden}");
                }
                let writes = actions.iter().any(|a| {
                    a.contains("Put")
                        || a.contains("Update")
                        || a.contains("Send")
                        || a.contains("Write")
                });
                assert!(
                    !(writes && statement["Resource"] == "*"),
                    "{name}: writes need a resource"
                );
            }
        }
    }
    binaries.sort();
    assert_eq!(
        binaries,
        [
            "api",
            "completion-notifier",
            "row-dead-letter",
            "row-worker",
            "s3-ingest",
            "sweeper",
            "webhook-sender"
        ]
    );
}

#[test]
fn every_environment_variable_is_one_the_code_reads() {
    let t = template();
    let mut maps = vec![(
        "Globals",
        &t["Globals"]["Function"]["Environment"]["Variables"],
    )];
    for (name, function) in functions(&t) {
        maps.push((name, &function["Properties"]["Environment"]["Variables"]));
    }
    for (name, map) in maps {
        let Some(map) = map.as_mapping() else {
            continue;
        };
        for key in map.keys().map(|k| k.as_str().unwrap()) {
            // The Lambda runtime reads AWS_LAMBDA_LOG_FORMAT; glibc reads GLIBC_TUNABLES, set
            // on the row-worker only (row_worker_allocator_tunables_are_ones_glibc_accepts).
            assert!(
                vars::ALL.contains(&key)
                    || key == "AWS_LAMBDA_LOG_FORMAT"
                    || (key == "GLIBC_TUNABLES" && name == "RowWorkerFunction"),
                "{name}: {key} is not read by pixpress"
            );
        }
    }
}

/// glibc ignores a tunable it does not know or whose value is out of range, without a word
/// (glibc 2.34, the row-worker's on AL2023: `elf/dl-tunables.c`; `arena_max` at least 1 per
/// `elf/dl-tunables.list`; `mmap_threshold` at most `HEAP_MAX_SIZE / 2`, 32 MiB on 64-bit, per
/// `do_set_mmap_threshold` in `malloc/malloc.c`), so a typo would quietly bring back the page
/// faults of scoring.
#[test]
fn row_worker_allocator_tunables_are_ones_glibc_accepts() {
    let t = template();
    let tunables = props(&t, "RowWorkerFunction")["Environment"]["Variables"]["GLIBC_TUNABLES"]
        .as_str()
        .expect("the row-worker sets GLIBC_TUNABLES");
    let mut names = Vec::new();
    for pair in tunables.split(':') {
        let (name, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("{pair:?} is not name=value"));
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {value:?} is not a number"));
        let (min, max) = match name {
            "glibc.malloc.mmap_threshold" => (0, 32 * 1024 * 1024),
            "glibc.malloc.trim_threshold" => (0, u64::MAX),
            "glibc.malloc.arena_max" => (1, u64::MAX),
            other => panic!("{other} is not a malloc tunable the row-worker is meant to set"),
        };
        assert!(
            (min..=max).contains(&value),
            "{name}={value} is outside {min}..={max}: glibc would ignore it"
        );
        names.push(name);
    }
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "glibc.malloc.arena_max",
            "glibc.malloc.mmap_threshold",
            "glibc.malloc.trim_threshold"
        ]
    );
}

#[test]
fn uploads_trigger_is_limited_to_csvs_under_uploads() {
    let t = template();
    let rules = &props(&t, "S3IngestFunction")["Events"]["CsvUploaded"]["Properties"]["Filter"]["S3Key"]
        ["Rules"];
    assert_eq!(
        rules[0]["Value"],
        pixpress_domain::storage_keys::UPLOADS_PREFIX
    );
    assert_eq!(rules[1]["Value"], ".csv");
}

#[test]
fn dead_lettered_rows_are_consumed_and_recorded_not_stranded() {
    let t = template();
    let event = &props(&t, "RowDeadLetterFunction")["Events"]["DeadLetters"];
    assert_eq!(event["Type"], "SQS");
    let queue = &event["Properties"]["Queue"];
    let target = match queue {
        Value::Tagged(t) => t.value.as_str().unwrap_or_default().to_owned(),
        other => format!("{other:?}"),
    };
    assert!(target.starts_with("RowsDeadLetterQueue"), "{target}");
    assert_eq!(
        event["Properties"]["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    // The alarm watches what is left behind: the age of the oldest dead letter.
    let alarm = props(&t, "RowsDeadLetterAlarm");
    assert_eq!(alarm["MetricName"], "ApproximateAgeOfOldestMessage");
}

#[test]
fn every_api_route_is_on_the_throttled_stage_with_cors_for_the_allowed_origin_only() {
    let t = template();
    let api = props(&t, "HttpApi");
    let throttling = &api["DefaultRouteSettings"];
    assert_eq!(
        ref_target(&throttling["ThrottlingRateLimit"]),
        Some("ApiThrottlingRateLimit")
    );
    assert_eq!(
        ref_target(&throttling["ThrottlingBurstLimit"]),
        Some("ApiThrottlingBurstLimit")
    );
    let cors = &api["CorsConfiguration"];
    let origins = cors["AllowOrigins"].as_sequence().unwrap();
    assert_eq!(origins.len(), 1);
    assert_eq!(ref_target(&origins[0]), Some("AllowedOrigin"));
    let headers: Vec<&str> = cors["AllowHeaders"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(headers.contains(&"authorization"), "{headers:?}");
    let events = props(&t, "ApiFunction")["Events"].as_mapping().unwrap();
    assert!(!events.is_empty());
    for (name, event) in events {
        assert_eq!(event["Type"], "HttpApi", "{name:?}");
        assert_eq!(
            ref_target(&event["Properties"]["ApiId"]),
            Some("HttpApi"),
            "{name:?} is not on the throttled API"
        );
    }
}

#[test]
fn every_alarm_notifies_the_topic_and_every_function_is_watched_logged_and_traceable() {
    let t = template();
    let resources = t["Resources"].as_mapping().unwrap();
    let alarms: Vec<(&str, &Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(k, r)| (k.as_str().unwrap(), r))
        .collect();
    for (name, alarm) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            let wired = serde_yaml_ng::to_string(&alarm["Properties"][actions]).unwrap();
            assert!(
                wired.contains("HasAlarmTopic") && wired.contains("AlarmTopicArn"),
                "{name} {actions}: {wired}"
            );
        }
    }
    for (function, _) in functions(&t) {
        for metric in ["Errors", "Throttles"] {
            assert!(
                alarms.iter().any(|(_, a)| {
                    a["Properties"]["MetricName"] == metric
                        && ref_target(&a["Properties"]["Dimensions"][0]["Value"]) == Some(function)
                }),
                "no {metric} alarm on {function}"
            );
        }
        let group = ref_target(&props(&t, function)["LoggingConfig"]["LogGroup"])
            .unwrap_or_else(|| panic!("{function} has no log group"));
        assert_eq!(
            ref_target(&props(&t, group)["RetentionInDays"]),
            Some("LogRetentionDays")
        );
    }
    assert!(alarms.iter().any(|(_, a)| {
        a["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"
            && serde_yaml_ng::to_string(&a["Properties"]["Dimensions"])
                .unwrap()
                .contains("RowsQueue.QueueName")
    }));
    let tracing = serde_yaml_ng::to_string(&t["Globals"]["Function"]["Tracing"]).unwrap();
    assert!(tracing.contains("TracingEnabled"), "{tracing}");
    assert_eq!(
        resource(&t, "Dashboard")["Type"],
        "AWS::CloudWatch::Dashboard"
    );
}

#[test]
fn webhooks_leave_the_stream_shard_and_dead_letter_after_the_schedule() {
    let t = template();
    let queue = props(&t, "WebhooksQueue");
    // Attempts are counted on the request, so receives cut short cost none: the redrive
    // leaves room for them beyond the schedule's attempts.
    assert!(
        number(&queue["RedrivePolicy"]["maxReceiveCount"])
            >= 2 * u64::from(pixpress_domain::webhook::MAX_DELIVERY_ATTEMPTS)
    );
    let sender = props(&t, "WebhookSenderFunction");
    assert!(number(&queue["VisibilityTimeout"]) >= 6 * number(&sender["Timeout"]));
    let event = &sender["Events"]["Webhooks"]["Properties"];
    assert_eq!(event["FunctionResponseTypes"][0], "ReportBatchItemFailures");
    let notifier_env = &props(&t, "CompletionNotifierFunction")["Environment"]["Variables"];
    assert_eq!(
        ref_target(&notifier_env["WEBHOOKS_QUEUE_URL"]),
        Some("WebhooksQueue")
    );
    assert_eq!(
        resource(&t, "WebhooksDeadLetterAlarm")["Type"],
        "AWS::CloudWatch::Alarm"
    );
    // A delivery that used its schedule is counted by the sender's own metric.
    let failed = props(&t, "WebhooksFailedAlarm");
    assert_eq!(
        failed["Namespace"],
        pixpress_app::telemetry::METRICS_NAMESPACE
    );
    assert_eq!(failed["MetricName"], "webhooks_failed");
    assert_eq!(failed["Dimensions"][0]["Value"], "webhook-sender");
}

#[test]
fn catalogue_uploads_have_their_own_size_limit_and_fan_out_through_the_ingest_queue() {
    let t = template();
    let p = props(&t, "S3IngestFunction");
    let env = &p["Environment"]["Variables"];
    assert_eq!(
        ref_target(&env[vars::MAX_UPLOAD_BYTES]),
        Some("MaxUploadBytes")
    );
    assert!(number(&t["Parameters"]["MaxUploadBytes"]["Default"]) >= 1_000_000_000);
    assert!(number(&t["Parameters"]["MaxUploadRows"]["Default"]) >= 1_000_000);
    assert_eq!(
        ref_target(&env[vars::INGEST_QUEUE_URL]),
        Some("IngestQueue")
    );
    let chunks = &p["Events"]["Chunks"];
    assert_eq!(chunks["Type"], "SQS");
    assert_eq!(
        chunks["Properties"]["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    let timeout = number(&p["Timeout"]);
    let visibility = number(&props(&t, "IngestQueue")["VisibilityTimeout"]);
    assert!(
        visibility >= 6 * timeout,
        "visibility {visibility} s < 6 × {timeout} s"
    );
    assert!(!props(&t, "IngestQueue")["RedrivePolicy"]["deadLetterTargetArn"].is_null());
}

#[test]
fn every_path_reaches_the_api_router_and_browsers_may_use_the_presigned_links() {
    let t = template();
    let events = props(&t, "ApiFunction")["Events"].as_mapping().unwrap();
    let routes: Vec<(String, String)> = events
        .values()
        .map(|e| {
            (
                e["Properties"]["Method"].as_str().unwrap().to_owned(),
                e["Properties"]["Path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The router answers every path (404/405 included); the greedy path misses the root page.
    assert!(
        routes.contains(&("ANY".into(), "/{proxy+}".into())),
        "{routes:?}"
    );
    assert!(routes.contains(&("GET".into(), "/".into())), "{routes:?}");
    let rules = &props(&t, "DataBucket")["CorsConfiguration"]["CorsRules"];
    let rule = &rules[0];
    let methods: Vec<&str> = rule["AllowedMethods"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(methods, ["GET", "POST"]);
    let origins = serde_yaml_ng::to_string(&rule["AllowedOrigins"]).unwrap();
    assert!(
        origins.contains("${HttpApi}.execute-api") && origins.contains("AllowedOrigin"),
        "{origins}"
    );
    assert!(!origins.contains("'*'"), "{origins}");
}

#[test]
fn items_and_outputs_expire_after_their_retention_parameters() {
    let t = template();
    let variables = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        ref_target(&variables["RETENTION_DAYS"]),
        Some("RetentionDays")
    );
    let table = props(&t, "RequestsTable");
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"],
        pixpress_domain::item::TTL_ATTRIBUTE
    );
    let rules =
        serde_yaml_ng::to_string(&props(&t, "DataBucket")["LifecycleConfiguration"]).unwrap();
    for prefix in ["images/", "results/"] {
        assert!(rules.contains(&format!("Prefix: {prefix}")), "{rules}");
    }
    assert!(
        rules.contains("ExpireOutputs") && rules.contains("OutputRetentionDays"),
        "{rules}"
    );
    let conditions = serde_yaml_ng::to_string(&t["Conditions"]["ExpireOutputs"]).unwrap();
    assert!(conditions.contains("OutputRetentionDays"), "{conditions}");
}

/// The alarms on `namespace`/`metric` whose dimensions mention `target` (a resource name, as
/// `!Ref X` or `!GetAtt X.QueueName`).
fn alarms_on<'a>(t: &'a Value, namespace: &str, metric: &str, target: &str) -> Vec<&'a str> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| {
            let p = &r["Properties"];
            r["Type"] == "AWS::CloudWatch::Alarm"
                && p["Namespace"] == namespace
                && p["MetricName"] == metric
                && serde_yaml_ng::to_string(&p["Dimensions"])
                    .unwrap()
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|word| word == target)
        })
        .map(|(k, _)| k.as_str().unwrap())
        .collect()
}

#[test]
fn operations_see_table_throttling_stream_lag_every_queue_and_api_5xx() {
    let t = template();
    for metric in [
        "WriteThrottleEvents",
        "ReadThrottleEvents",
        "ThrottledRequests",
    ] {
        assert!(
            !alarms_on(&t, "AWS/DynamoDB", metric, "RequestsTable").is_empty(),
            "no {metric} alarm on the requests table"
        );
    }
    assert!(
        !alarms_on(
            &t,
            "AWS/Lambda",
            "IteratorAge",
            "CompletionNotifierFunction"
        )
        .is_empty(),
        "no IteratorAge alarm on the notifier's stream"
    );
    assert!(
        !alarms_on(&t, "AWS/ApiGateway", "5xx", "HttpApi").is_empty(),
        "no 5xx alarm on the HTTP API"
    );
    let queues: Vec<&str> = t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::SQS::Queue")
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(queues.len(), 7, "{queues:?}");
    for queue in queues {
        // A work queue is watched by the age of its oldest message; a dead-letter or failure
        // queue by any message in it.
        let age = alarms_on(&t, "AWS/SQS", "ApproximateAgeOfOldestMessage", queue);
        let visible = alarms_on(&t, "AWS/SQS", "ApproximateNumberOfMessagesVisible", queue);
        let dead_letter = queue.contains("DeadLetter") || queue.contains("Failure");
        assert!(
            !age.is_empty() || (dead_letter && !visible.is_empty()),
            "no alarm watches {queue}"
        );
    }
    let dashboard = serde_yaml_ng::to_string(&props(&t, "Dashboard")["DashboardBody"]).unwrap();
    for (function, _) in functions(&t) {
        for metric in ["Invocations", "Errors", "Throttles"] {
            let widget = dashboard
                .split("\"title\"")
                .find(|w| w.contains(&format!("\"{metric}\"")))
                .unwrap_or_else(|| panic!("no {metric} widget"));
            assert!(
                widget.contains(&format!("${{{function}}}")),
                "the {metric} widget leaves out {function}"
            );
        }
    }
}

#[test]
fn every_function_that_reads_objects_may_list_the_bucket_so_a_missing_key_is_a_404() {
    // GetObject of a missing key answers 404 NoSuchKey only to a caller with s3:ListBucket on
    // the bucket, 403 AccessDenied otherwise ("GetObject", Amazon S3 API Reference); the code
    // reads NoSuchKey as "no such object" and everything else as a failure.
    let t = template();
    let mut readers = Vec::new();
    for (name, function) in functions(&t) {
        let statements: Vec<&Value> = function["Properties"]["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|p| p["Statement"].as_sequence().unwrap())
            .collect();
        let allows = |action: &str| -> Vec<String> {
            statements
                .iter()
                .filter(|s| {
                    s["Action"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|a| a == action)
                })
                .map(|s| serde_yaml_ng::to_string(&s["Resource"]).unwrap())
                .collect()
        };
        if allows("s3:GetObject").is_empty() {
            continue;
        }
        readers.push(name);
        let listed = allows("s3:ListBucket");
        assert!(
            listed
                .iter()
                .any(|r| r.contains("${DeploymentName}") && !r.contains("${DeploymentName}/")),
            "{name} reads objects but may not list the bucket: {listed:?}"
        );
    }
    readers.sort_unstable();
    assert_eq!(
        readers,
        [
            "ApiFunction",
            "CompletionNotifierFunction",
            "S3IngestFunction",
            "SweeperFunction"
        ]
    );
}

#[test]
fn an_upload_event_lambda_gives_up_on_reaches_a_consumer_that_fails_its_request() {
    // S3 invokes s3-ingest asynchronously: after Lambda's retries the event is dropped unless
    // the function has an on-failure destination, and then the request id a client holds
    // answers 404 forever. The destination is a queue s3-ingest itself consumes.
    let t = template();
    let ingest = props(&t, "S3IngestFunction");
    let destination = serde_yaml_ng::to_string(
        &ingest["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"],
    )
    .unwrap();
    assert_eq!(
        ingest["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Type"],
        "SQS"
    );
    let consumed = ingest["Events"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"] == "SQS")
        .any(|e| serde_yaml_ng::to_string(&e["Properties"]["Queue"]).unwrap() == destination);
    assert!(
        consumed,
        "s3-ingest does not consume its on-failure destination {destination}"
    );
}

#[test]
fn api_keys_and_tenant_secrets_are_readable_only_by_the_functions_that_use_them() {
    // One table holds requests, API keys (`KEY#…`) and tenants with their webhook signing
    // secrets (`TENANT#…`). IAM's `dynamodb:LeadingKeys` denies each function the partitions
    // it has no use for: only the api reads keys; only the notifier and the sender read
    // tenants.
    let t = template();
    let denied = |function: &str| -> Vec<String> {
        props(&t, function)["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|p| p["Statement"].as_sequence().unwrap())
            .filter(|s| s["Effect"] == "Deny")
            .flat_map(|s| {
                s["Condition"]["ForAnyValue:StringLike"]["dynamodb:LeadingKeys"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let expected: [(&str, &[&str]); 7] = [
        ("ApiFunction", &["TENANT#*"]),
        ("S3IngestFunction", &["KEY#*", "TENANT#*"]),
        ("RowWorkerFunction", &["KEY#*", "TENANT#*"]),
        ("RowDeadLetterFunction", &["KEY#*", "TENANT#*"]),
        ("CompletionNotifierFunction", &["KEY#*"]),
        ("WebhookSenderFunction", &["KEY#*"]),
        ("SweeperFunction", &["KEY#*", "TENANT#*"]),
    ];
    for (function, prefixes) in expected {
        assert_eq!(denied(function), prefixes, "{function}");
    }
    assert_eq!(functions(&t).len(), expected.len());
}

#[test]
fn a_scheduled_sweeper_reads_the_open_requests_index_and_alarms_on_repairs() {
    // Without it a request whose event was lost stays PENDING or PROCESSING, or terminal with
    // no output CSV, for ever.
    let t = template();
    let index = props(&t, "RequestsTable")["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["IndexName"] == pixpress_domain::item::OPEN_INDEX)
        .expect("the open-requests index");
    assert_eq!(
        index["KeySchema"][0]["AttributeName"],
        pixpress_domain::item::OPEN_ATTRIBUTE
    );
    assert_eq!(index["KeySchema"][1]["AttributeName"], "created_at");
    let sweeper = props(&t, "SweeperFunction");
    let schedule = &sweeper["Events"]["Schedule"];
    assert_eq!(schedule["Type"], "ScheduleV2");
    assert!(
        schedule["Properties"]["ScheduleExpression"]
            .as_str()
            .unwrap()
            .starts_with("rate("),
        "{schedule:?}"
    );
    let policies = serde_yaml_ng::to_string(&sweeper["Policies"]).unwrap();
    assert!(policies.contains("/index/open-requests"), "{policies}");
    assert!(
        !alarms_on(&t, "pixpress", "sweeper_repairs", "sweeper").is_empty(),
        "no alarm on sweeper repairs"
    );
    // Idle bounds longer than a row's and a chunk's whole retry series.
    let idle: u64 = sweeper["Environment"]["Variables"]["SWEEP_IDLE_SECONDS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ingest_idle: u64 = sweeper["Environment"]["Variables"]["SWEEP_INGEST_IDLE_SECONDS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let receives = number(&t["Parameters"]["MaxReceiveCount"]["Default"]);
    assert!(idle > receives * number(&props(&t, "RowsQueue")["VisibilityTimeout"]));
    assert!(ingest_idle > receives * number(&props(&t, "IngestQueue")["VisibilityTimeout"]));
}

#[test]
fn webhook_secrets_are_encrypted_at_rest_and_only_the_sender_may_open_them() {
    // Tenants' secrets are sealed under a KMS key of the template (envelope encryption); the
    // deployment's own secret lives in Secrets Manager, never in a plain variable.
    let t = template();
    let key = props(&t, "WebhookSecretsKey");
    assert_eq!(resource(&t, "WebhookSecretsKey")["Type"], "AWS::KMS::Key");
    assert_eq!(key["EnableKeyRotation"], true);
    assert_eq!(
        resource(&t, "WebhookSigningSecret")["Type"],
        "AWS::SecretsManager::Secret"
    );
    let statements = |function: &str| -> Vec<String> {
        props(&t, function)["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|p| p["Statement"].as_sequence().unwrap())
            .filter(|s| s["Effect"] == "Allow")
            .map(|s| serde_yaml_ng::to_string(s).unwrap())
            .collect()
    };
    for (function, _) in functions(&t) {
        let variables = &props(&t, function)["Environment"]["Variables"];
        assert!(
            variables.get(vars::WEBHOOK_SECRET).is_none(),
            "{function} gets the signing secret as a plain variable"
        );
        let allowed = statements(function).join("\n");
        let signs = function == "WebhookSenderFunction";
        assert_eq!(
            allowed.contains("kms:Decrypt") && allowed.contains("WebhookSecretsKey.Arn"),
            signs,
            "{function}: {allowed}"
        );
        assert_eq!(
            allowed.contains("secretsmanager:GetSecretValue"),
            signs,
            "{function}"
        );
        if signs {
            assert_eq!(
                ref_target(&variables[vars::WEBHOOK_SECRET_ARN]),
                Some("WebhookSigningSecret")
            );
            assert_eq!(
                ref_target(&variables[vars::WEBHOOK_SECRETS_KEY_ID]),
                Some("WebhookSecretsKey")
            );
        }
    }
}
