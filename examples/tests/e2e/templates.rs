//! Job templates through the real server: REST, gRPC and the `hodei` CLI,
//! versions, typed parameters refused with the field named, and a template
//! run producing a job that runs and succeeds on the process provider.

use std::time::Duration;

use hodei_core::proto::v1;
use hodei_core::proto::v1::template_service_client::TemplateServiceClient;
use serde_json::{Value, json};

use super::cli;
use super::harness::*;

const DONE: Duration = Duration::from_secs(60);

fn greet(greeting: &str) -> Value {
    json!({
        "name": "greet",
        "description": "says hello",
        "parameters": [
            {"name": "who", "default": "world"},
            {"name": "times", "type": "integer"},
            {"name": "tone", "type": "enum", "values": ["plain", "loud"], "default": "plain"}
        ],
        "spec": {
            "name": "greet {{who}}",
            "command": {"type": "shell", "cmd": "sh",
                        "args": ["-c", format!("echo {greeting} {{{{who}}}} x{{{{times}}}} {{{{tone}}}}")]}
        }
    })
}

async fn error_field(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status(), status, "status");
    let body: Value = r.json().await.unwrap();
    body["error"]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no field in {body}"))
        .to_owned()
}

#[tokio::test]
async fn rest_templates_are_versioned_run_and_refuse_bad_parameters() {
    let s = start_server(&[]).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}/api/v1/templates{p}", s.http);

    let r = c.post(url("")).json(&greet("hello")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/api/v1/templates/greet?version=1");
    let v1: Value = r.json().await.unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["parameters"][1]["type"], "integer");
    assert_eq!(v1["parameters"][1]["required"], true);
    let v2: Value = c
        .post(url(""))
        .json(&greet("hi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["version"], 2, "same name: next version");

    // Bad templates are refused whole, naming the field; nothing is stored.
    let mut bad = greet("x");
    bad["parameters"][2]["values"] = json!([]);
    let r = c.post(url("")).json(&bad).send().await.unwrap();
    assert_eq!(error_field(r, 400).await, "parameters.tone.values");
    let mut bad = greet("x");
    bad["spec"]["command"]["args"][1] = json!("echo {{nope}}");
    let r = c.post(url("")).json(&bad).send().await.unwrap();
    assert_eq!(error_field(r, 400).await, "spec.command.args.1");
    let mut bad = greet("x");
    bad["name"] = json!("Bad Name");
    let r = c.post(url("")).json(&bad).send().await.unwrap();
    assert_eq!(error_field(r, 400).await, "name");

    let list: Value = c.get(url("")).send().await.unwrap().json().await.unwrap();
    let names: Vec<(&str, u64)> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("greet", 2)],
        "the latest of each, refused ones absent"
    );
    let latest: Value = c
        .get(url("/greet"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["version"], 2);
    let first: Value = c
        .get(url("/greet?version=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["version"], 1);
    assert!(
        first["spec"]["command"]["args"][1]
            .as_str()
            .unwrap()
            .starts_with("echo hello")
    );
    let r = c.get(url("/greet?version=x")).send().await.unwrap();
    assert_eq!(error_field(r, 400).await, "version");
    assert_eq!(
        c.get(url("/greet?version=9"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(c.get(url("/nope")).send().await.unwrap().status(), 404);

    // Bad parameter values: 400 naming parameters.<name>; no job stored.
    for (params, field) in [
        (json!({}), "parameters.times"),
        (json!({"times": "abc"}), "parameters.times"),
        (json!({"times": 2, "tone": "quiet"}), "parameters.tone"),
        (json!({"times": 2, "bogus": 1}), "parameters.bogus"),
        (json!({"times": [1]}), "parameters.times"),
    ] {
        let r = c
            .post(url("/greet/run"))
            .json(&json!({ "parameters": params }))
            .send()
            .await
            .unwrap();
        assert_eq!(error_field(r, 400).await, field, "{params}");
    }
    let r = c
        .post(url("/nope/run"))
        .json(&json!({"parameters": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let jobs: Value = c
        .get(format!("{}/api/v1/jobs", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        0,
        "no job from bad runs"
    );

    // A good run of version 1: a real job, labelled, that succeeds.
    let r = c
        .post(url("/greet/run"))
        .json(&json!({"parameters": {"who": "rest", "times": 3}, "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["name"], "greet rest");
    assert_eq!(job["spec"]["labels"]["hodei.template"], "greet");
    assert_eq!(job["spec"]["labels"]["hodei.template.version"], "1");
    let id = job["id"].as_str().unwrap().to_owned();
    let done = s.wait_done(&id, DONE).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{}", done.error);
    assert_eq!(s.log_lines(&id).await, ["hello rest x3 plain"]);

    let doc: Value = c
        .get(format!("{}/api/v1/openapi.json", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/api/v1/templates",
        "/api/v1/templates/{name}",
        "/api/v1/templates/{name}/run",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} in the OpenAPI document");
    }
}

#[tokio::test]
async fn grpc_and_cli_templates_run_a_job_that_succeeds() {
    let s = start_server(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greet.yaml");
    std::fs::write(
        &file,
        r#"name: greet
description: says hello
parameters:
  - name: who
    default: world
  - name: n
    type: integer
    description: how many
spec:
  name: "greet {{who}}"
  command:
    type: shell
    cmd: sh
    args: ["-c", "echo hello {{who}} {{n}}"]
"#,
    )
    .unwrap();
    let out = cli(
        &s,
        &[
            "template",
            "create",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["version"], 1);
    assert_eq!(created["parameters"][1]["type"], "integer");

    // gRPC: a second version, listing, reading one version.
    let mut grpc = TemplateServiceClient::new(s.channel.clone());
    let got = grpc
        .get_template(v1::GetTemplateRequest {
            name: "greet".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    let mut next = got.clone();
    next.description = "version two".into();
    let stored = grpc
        .create_template(v1::CreateTemplateRequest {
            template: Some(next),
        })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(stored.version, 2);
    let listed = grpc
        .list_templates(v1::ListTemplatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .templates;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].version, listed[0].description.as_str()),
        (2, "version two")
    );
    let err = grpc
        .run_template(v1::RunTemplateRequest {
            name: "greet".into(),
            parameters: [("n".to_owned(), "many".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("parameters.n"), "{}", err.message());
    let mut bad = got.clone();
    bad.parameters[1].r#type = v1::ParameterType::Boolean as i32;
    bad.parameters[1].default_value = Some("maybe".into());
    let err = grpc
        .create_template(v1::CreateTemplateRequest {
            template: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("parameters.n.default"),
        "{}",
        err.message()
    );
    let run = grpc
        .run_template(v1::RunTemplateRequest {
            name: "greet".into(),
            version: 1,
            parameters: [("n".to_owned(), "7".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let done = s.wait_done(&run.id, DONE).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{}", done.error);
    assert_eq!(s.log_lines(&run.id).await, ["hello world 7"]);

    // The CLI: list, show a version, a bad parameter, and a run that waits.
    let out = cli(&s, &["template", "list", "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "greet");
    assert_eq!(list[0]["version"], 2);
    let out = cli(
        &s,
        &["template", "show", "greet", "--version", "1", "-o", "json"],
    )
    .await;
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (shown["version"].clone(), shown["description"].clone()),
        (json!(1), json!("says hello"))
    );
    let out = cli(&s, &["template", "run", "greet", "--param", "n=x"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("parameters.n"),
        "{out:?}"
    );
    let out = cli(
        &s,
        &[
            "template", "run", "greet", "--param", "who=cli", "--param", "n=2", "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello cli 2\n");
    // The example the README shows, as shown.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/greet.yaml");
    let mut example_text = std::fs::read_to_string(example).unwrap();
    example_text = example_text.replace("name: greet\n", "name: greet-example\n");
    let example_file = dir.path().join("example.yaml");
    std::fs::write(&example_file, example_text).unwrap();
    let out = cli(
        &s,
        &["template", "create", "-f", example_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "template greet-example version 1\n",
        "{out:?}"
    );
    let out = cli(
        &s,
        &[
            "template",
            "run",
            "greet-example",
            "-p",
            "who=you",
            "-p",
            "times=2",
            "-p",
            "tone=loud",
            "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO YOU\nHELLO YOU\n"
    );
    let out = cli(&s, &["template", "run", "greet", "-p", "n=5", "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["spec"]["labels"]["hodei.template.version"], "2");
    let done = s.wait_done(job["id"].as_str().unwrap(), DONE).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{}", done.error);
}

/// Templates live in Postgres: they survive a server restart on the same database.
#[tokio::test]
async fn templates_survive_a_restart_on_postgres() {
    let Some(url) = fresh_database().await else {
        return;
    };
    let key = "11".repeat(32);
    let env = [
        ("HODEI_DATABASE_URL", url.as_str()),
        ("HODEI_SECRETS_KEY", key.as_str()),
    ];
    let c = reqwest::Client::new();
    {
        let s = start_server(&env).await;
        for greeting in ["hello", "hi"] {
            let r = c
                .post(format!("{}/api/v1/templates", s.http))
                .json(&greet(greeting))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    }
    let s = start_server(&env).await;
    let t: Value = c
        .get(format!("{}/api/v1/templates/greet?version=1", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["version"], 1);
    let r = c
        .post(format!("{}/api/v1/templates/greet/run", s.http))
        .json(&json!({"parameters": {"times": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let done = s.wait_done(id, DONE).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{}", done.error);
    assert_eq!(s.log_lines(id).await, ["hi world x1 plain"]);
}
