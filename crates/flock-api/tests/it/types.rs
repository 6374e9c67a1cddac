//! Declared types and LLM agents in the configuration file: `[[types]]` read as written and
//! listed by `GET /api/v1/types`, a publish its schema refuses answered 422 naming the path,
//! `[[agents]]` with an `llm` table built as an LLM agent, and every bad key named.

use actix_web::test::{self, TestRequest};
use flock_api::config::Settings;
use flock_api::create_app;
use flock_api::startup::build_state;
use flock_orchestrator::AgentKind;
use serde_json::{Value, json};

use crate::config::{env, file, tempfile_lite::TempFile};

/// A `Plan` type written the way a user writes a long schema (sub-tables, camelCase keys, a
/// `$defs` reference), a second type, and an LLM agent beside a command agent.
const TYPED: &str = r##"
[store]
url = "memory://"

[[types]]
name = "Plan"

[types.schema]
type = "object"
additionalProperties = false
required = ["title", "steps"]

[types.schema.properties.title]
type = "string"
maxLength = 60

[types.schema.properties.steps]
type = "array"
minItems = 1
maxItems = 3
items = { "$ref" = "#/$defs/step" }

[types.schema."$defs".step]
type = "string"
minLength = 1

[[types]]
name = "Idea"
schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }

[[agents]]
name = "planner"
consumes = ["Idea"]
publishes = ["Plan"]
timeout_ms = 60000
llm = { base_url = "http://127.0.0.1:9/v1", model = "smollm2", system = "You plan.", temperature = 0.0, max_tokens = 512 }
retry = { max_retries = 1, base_delay_ms = 10 }

[[agents]]
name = "shouter"
consumes = ["Plan"]
publishes = ["Shout"]
command = ["python3", "shout.py"]
"##;

fn plan_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["title", "steps"],
        "properties": {
            "title": {"type": "string", "maxLength": 60},
            "steps": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"$ref": "#/$defs/step"}}
        },
        "$defs": {"step": {"type": "string", "minLength": 1}}
    })
}

fn typed() -> (TempFile, Settings) {
    let f = file(TYPED);
    let settings = Settings::read(Some(f.path()), env(&[])).unwrap();
    (f, settings)
}

#[test]
fn types_and_llm_agents_are_read_as_written() {
    let (_f, settings) = typed();
    let checked = settings.check().unwrap();
    let names: Vec<&str> = checked
        .types()
        .names()
        .map(flock_models::TypeName::as_str)
        .collect();
    assert_eq!(names, ["Plan", "Idea"], "declaration order");
    let plan = flock_models::TypeName::new("Plan").unwrap();
    let schema = checked.types().schema(&plan).unwrap();
    assert_eq!(schema, &plan_schema(), "keys keep their case");
    // And their order, as written.
    let keys: Vec<&str> = schema
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "type",
            "additionalProperties",
            "required",
            "properties",
            "$defs"
        ]
    );
    let kinds: Vec<(&str, AgentKind)> = checked
        .agents()
        .iter()
        .map(|a| (a.name(), a.kind()))
        .collect();
    assert_eq!(
        kinds,
        [("planner", AgentKind::Llm), ("shouter", AgentKind::Command)]
    );
    let planner = &checked.agents()[0];
    assert_eq!(planner.timeout(), Some(std::time::Duration::from_secs(60)));
    assert!(format!("{checked:?}").contains(r#"types: ["Plan", "Idea"]"#));
}

/// File text and the key the error must name, with words its message must contain.
type Case<'a> = (String, &'a str, &'a str);

#[test]
fn every_bad_type_or_llm_key_is_named() {
    let llm_agent = |llm: &str, extra: &str| {
        format!(
            "[[agents]]\nname = \"planner\"\nconsumes = [\"Idea\"]\npublishes = [\"Plan\"]\n\
             llm = {{ {llm} }}\n{extra}"
        )
    };
    let local = r#"base_url = "http://127.0.0.1:9/v1", model = "m""#;
    let object = r#"schema = { type = "object" }"#;
    let cases: Vec<Case<'_>> = vec![
        (
            format!("[[types]]\nname = \"a b\"\n{object}\n"),
            "types[0].name",
            "' '",
        ),
        (
            format!("[[types]]\nname = \"Plan\"\n{object}\n[[types]]\nname = \"Plan\"\n{object}\n"),
            "types[1].name",
            "more than once",
        ),
        (
            format!("[[types]]\nname = \"WorkflowError\"\n{object}\n"),
            "types[0].name",
            "cannot be declared",
        ),
        (
            "[[types]]\nname = \"Plan\"\nschema = { type = \"string\" }\n".to_owned(),
            "types[0].schema",
            "\"type\": \"object\"",
        ),
        (
            "[[types]]\nname = \"Plan\"\nschema = { type = \"object\", minProperties = -1 }\n"
                .to_owned(),
            "types[0].schema",
            "not a valid JSON Schema",
        ),
        (
            "[[types]]\nname = \"Plan\"\nschema = { type = \"object\", properties = { a = { \"$ref\" = \"https://example.com/s.json\" } } }\n"
                .to_owned(),
            "types[0].schema",
            "not a valid JSON Schema",
        ),
        (
            llm_agent(r#"base_url = "http://127.0.0.1:9/v1", model = " ""#, ""),
            "agents[0].llm.model",
            "must name a model",
        ),
        (
            llm_agent(r#"base_url = "ftp://127.0.0.1/v1", model = "m""#, ""),
            "agents[0].llm.base_url",
            "scheme `ftp`",
        ),
        (
            llm_agent(&format!("{local}, temperature = 3.0"), ""),
            "agents[0].llm.temperature",
            "from 0 to 2",
        ),
        (
            llm_agent(&format!("{local}, max_tokens = 0"), ""),
            "agents[0].llm.max_tokens",
            "from 1",
        ),
        (
            llm_agent(&format!("{local}, api_key_env = \"FLOCK_TEST_NO_SUCH_KEY\""), ""),
            "agents[0].llm.api_key_env",
            "is not set",
        ),
        (
            llm_agent(local, "command = [\"python3\", \"a.py\"]\n"),
            "agents[0].llm",
            "exactly one of `command`, `url` or `llm`, not both `command` and `llm`",
        ),
        (
            llm_agent(local, "retry = { factor = 0 }\n"),
            "agents[0].retry.factor",
            "factor",
        ),
        (
            llm_agent(local, "retry = { max_retries = 1, base_delay_ms = 5000, max_delay_ms = 10 }\n"),
            "agents[0].retry.base_delay_ms",
            "",
        ),
        (
            llm_agent(local, "timeout_ms = 0\n"),
            "agents[0].timeout_ms",
            "between 1 and",
        ),
        (
            "[[agents]]\nname = \"planner\"\nconsumes = [\"Idea\"]\nllm = { base_url = \"http://127.0.0.1:9/v1\", model = \"m\" }\n"
                .to_owned(),
            "agents[0].publishes",
            "at least one",
        ),
        (
            "[[agents]]\nname = \"shouter\"\nconsumes = [\"Idea\"]\n".to_owned(),
            "agents[0].command",
            "`llm` (a model to ask)",
        ),
        (
            "[[agents]]\nname = \"shouter\"\nconsumes = [\"Idea\"]\ncommand = [\"python3\", \"a.py\"]\nretry = { max_retries = 1 }\n"
                .to_owned(),
            "agents[0].retry",
            "only an `llm` agent retries",
        ),
    ];
    for (text, key, words) in cases {
        let f = file(&text);
        let err = Settings::load(Some(f.path()), env(&[])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("configuration: `{key}`: ")),
            "{text}\n=> {message}"
        );
        assert!(message.contains(words), "{text}\n=> {message}");
    }
}

#[test]
fn an_api_key_written_in_the_file_is_refused_without_being_shown() {
    let f = file(
        "[[agents]]\nname = \"planner\"\nconsumes = [\"Idea\"]\npublishes = [\"Plan\"]\n\
         llm = { base_url = \"https://api.example.com/v1\", model = \"m\", api_key = \"sk-written-in-the-file\" }\n",
    );
    let err = Settings::load(Some(f.path()), env(&[])).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unknown field `api_key`"), "{message}");
    assert!(!message.contains("sk-written"), "{message}");
}

#[actix_web::test]
async fn a_publish_its_schema_refuses_is_422_naming_the_path_and_leaves_nothing_behind() {
    let (_f, mut settings) = typed();
    // No agents: only the publish path is under test.
    settings.agents.clear();
    let (state, _dispatcher) = build_state(&settings.check().unwrap()).await.unwrap();
    let app = test::init_service(create_app(state.clone())).await;
    let cases = [
        (
            "/api/v1/artifacts",
            json!({"type": "Plan", "payload": {"title": "t", "steps": ["a", "b", "c", "d"]}}),
            "payload.steps",
            "maximum 3 items",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "Plan", "payload": {"title": "t", "steps": ["a", ""]},
                   "webhook": {"url": "https://example.com/hook", "secret": "s"}}),
            "payload.steps[1]",
            "length",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "Idea", "payload": {"text": 3}, "timeout": 1}),
            "payload.text",
            "want string",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "Plan", "payload": {"title": "t", "steps": ["a"], "extra": true}}),
            "payload",
            "additionalProperties 'extra'",
        ),
    ];
    for (path, body, field, words) in cases {
        let req = TestRequest::post().uri(path).set_json(&body).to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 422, "{body}");
        let answer: Value = test::read_body_json(response).await;
        assert_eq!(answer["error"]["code"], "validation_error", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{answer}");
        assert!(message.contains("does not match the schema of"), "{answer}");
    }
    // Nothing was stored and no webhook was left registered.
    let req = TestRequest::get().uri("/api/v1/artifacts").to_request();
    let page: Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(page["pagination"]["total"], 0, "{page}");
    assert!(state.webhooks.is_empty());

    // A payload the schema accepts, and a type nobody declared, are published.
    for body in [
        json!({"type": "Plan", "payload": {"title": "t", "steps": ["a", "b", "c"]}}),
        json!({"type": "Note", "payload": {"anything": [1, "two"]}}),
    ] {
        let req = TestRequest::post()
            .uri("/api/v1/artifacts")
            .set_json(&body)
            .to_request();
        let response = test::call_service(&app, req).await;
        assert_eq!(response.status(), 202, "{body}");
    }
}

#[actix_web::test]
async fn the_types_route_lists_the_declared_types_and_the_agents_route_the_llm_kind() {
    let (_f, settings) = typed();
    let (state, _dispatcher) = build_state(&settings.check().unwrap()).await.unwrap();
    let app = test::init_service(create_app(state)).await;
    let req = TestRequest::get().uri("/api/v1/types").to_request();
    let types: Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(
        types,
        json!({"types": [
            {"name": "Plan", "schema": plan_schema()},
            {"name": "Idea", "schema": {"type": "object", "required": ["text"],
                                        "properties": {"text": {"type": "string"}}}},
        ]})
    );
    let req = TestRequest::post().uri("/api/v1/types").to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 405);

    let req = TestRequest::get().uri("/api/v1/agents").to_request();
    let agents: Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(
        agents["agents"][0],
        json!({"name": "planner", "kind": "llm", "consumes": ["Idea"],
               "publishes": ["Plan"], "timeout_ms": 60000})
    );
    assert_eq!(agents["agents"][1]["kind"], "command");

    // The OpenAPI document describes exactly these fields.
    let req = TestRequest::get().uri("/api/v1/openapi.json").to_request();
    let doc: Value = test::call_and_read_body_json(&app, req).await;
    let schemas = &doc["components"]["schemas"];
    let fields = |schema: &Value| -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(fields(&schemas["Types"]), ["types"]);
    assert_eq!(fields(&schemas["DeclaredType"]), ["name", "schema"]);
    let mut listed: Vec<String> = types["types"][0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    listed.sort();
    assert_eq!(fields(&schemas["DeclaredType"]), listed);
    assert_eq!(
        doc["paths"]["/api/v1/types"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/Types"
    );

    // Without declarations the list is empty.
    let (state, _dispatcher) = build_state(&crate::support::settings().check().unwrap())
        .await
        .unwrap();
    let app = test::init_service(create_app(state)).await;
    let req = TestRequest::get().uri("/api/v1/types").to_request();
    let types: Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(types, json!({"types": []}));
}

#[test]
fn the_readme_example_configuration_loads() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Configuration").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let f = file(&text.replace("sqlite://flock.db", "memory://"));
    let checked = Settings::load(Some(f.path()), env(&[])).unwrap();
    let plan = flock_models::TypeName::new("Plan").unwrap();
    let schema = checked.types().schema(&plan).unwrap();
    assert_eq!(schema["properties"]["steps"]["maxItems"], 3);
    let kinds: Vec<(&str, AgentKind)> = checked
        .agents()
        .iter()
        .map(|a| (a.name(), a.kind()))
        .collect();
    assert_eq!(
        kinds,
        [("shouter", AgentKind::Command), ("planner", AgentKind::Llm)]
    );
}

#[test]
fn the_readme_llm_recipes_load() {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme.find("## LLM agents").unwrap()..];
    let section = &section[..section.find("\n## ").unwrap()];
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").unwrap()])
        .collect();
    assert_eq!(blocks.len(), 2, "the local and the hosted recipe");

    let local = file(blocks[0]);
    let checked = Settings::load(Some(local.path()), env(&[])).unwrap();
    let names: Vec<&str> = checked
        .types()
        .names()
        .map(flock_models::TypeName::as_str)
        .collect();
    assert_eq!(names, ["Plan"]);
    assert_eq!(checked.agents()[0].kind(), AgentKind::Llm);

    // The hosted recipe reads its key from OPENAI_API_KEY when the server starts.
    let hosted = file(blocks[1]);
    match Settings::load(Some(hosted.path()), env(&[])) {
        Ok(checked) => {
            assert!(std::env::var_os("OPENAI_API_KEY").is_some());
            assert_eq!(checked.agents()[0].kind(), AgentKind::Llm);
        }
        Err(err) => assert_eq!(
            err.to_string(),
            "configuration: `agents[0].llm.api_key_env`: the environment variable \
             `OPENAI_API_KEY` is not set; it must hold the API key"
        ),
    }
}
