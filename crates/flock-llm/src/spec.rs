//! The `llm` table of an agent in configuration, its validation, and the API key it names.

use std::fmt;

use flock_models::ValidationError;
use serde::{Deserialize, Serialize};
use url::Url;

/// The most `max_tokens` accepted.
const MAX_TOKENS_LIMIT: u32 = 1_000_000;

/// How an LLM agent reaches its model, as configuration writes it:
///
/// ```toml
/// llm = { base_url = "http://127.0.0.1:8080/v1", model = "smollm2", system = "You plan.", temperature = 0.0, max_tokens = 512 }
/// ```
///
/// Deserializing checks only the shape (unknown keys are refused);
/// [`LlmAgentBuilder::build`](crate::LlmAgentBuilder::build) checks the values, reads the key
/// from the variable `api_key_env` names, and names the offending field (`llm.base_url`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSpec {
    /// The API's base URL, `http://` or `https://`, up to and including its version
    /// (`https://api.openai.com/v1`); requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The model to ask for.
    pub model: String,
    /// The system prompt: what the agent is for. The answer's format is added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling temperature, from 0 to 2; the provider's default if absent. At 0 a local model
    /// answers the same input the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The most tokens one answer may have; the provider's default if absent. An answer cut
    /// off at this limit is retried once, then the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The environment variable that holds the API key, sent as `Authorization: Bearer`. The key
    /// itself is never written in configuration; without this, requests carry no key (local
    /// servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

/// An API key: never shown by `Debug`, with no `Display` or `Serialize`; reading it takes
/// [`ApiKey::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a key.
    ///
    /// # Errors
    /// An empty key, or one with whitespace or control characters at its ends or inside
    /// (a key read from a file with its line break, for example), which no HTTP header can
    /// carry as meant. The message never contains the key.
    pub fn new(key: impl Into<String>) -> Result<Self, ValidationError> {
        let key = key.into();
        if key.is_empty() {
            return Err(ValidationError::whole("the API key is empty"));
        }
        if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ValidationError::whole(
                "the API key contains whitespace or a control character (a trailing line break?)",
            ));
        }
        if !key.is_ascii() {
            return Err(ValidationError::whole(
                "the API key contains non-ASCII characters",
            ));
        }
        Ok(ApiKey(key.into_boxed_str()))
    }

    /// The key itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A checked spec: what an agent needs at run time.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// `{base_url}/chat/completions`.
    pub(crate) endpoint: Url,
    pub(crate) model: String,
    pub(crate) system: Option<String>,
    pub(crate) temperature: Option<f64>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) api_key: Option<ApiKey>,
}

impl LlmSpec {
    /// Checks every value, reading the key through `env`; errors name the field within the
    /// spec (`base_url`, `api_key_env`, ...).
    pub(crate) fn check(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Checked, ValidationError> {
        let endpoint = endpoint(&self.base_url)
            .map_err(|message| ValidationError::field("base_url", message))?;
        if self.model.trim().is_empty() {
            return Err(ValidationError::field("model", "must name a model"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ValidationError::field(
                "temperature",
                format!("must be from 0 to 2, not {t}"),
            ));
        }
        if let Some(n) = self.max_tokens
            && !(1..=MAX_TOKENS_LIMIT).contains(&n)
        {
            return Err(ValidationError::field(
                "max_tokens",
                format!("must be from 1 to {MAX_TOKENS_LIMIT}, not {n}"),
            ));
        }
        let api_key = match &self.api_key_env {
            None => None,
            Some(var) => Some(read_key(var, env)?),
        };
        Ok(Checked {
            endpoint,
            model: self.model.clone(),
            system: self.system.clone().filter(|s| !s.trim().is_empty()),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            api_key,
        })
    }
}

fn read_key(var: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ApiKey, ValidationError> {
    let field = |message: String| ValidationError::field("api_key_env", message);
    if var.is_empty()
        || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || var.as_bytes()[0].is_ascii_digit()
    {
        return Err(field(format!(
            "`{var}` is not an environment variable name (letters, digits and `_`, not starting \
             with a digit); name the variable that holds the key, not the key"
        )));
    }
    let Some(value) = env(var) else {
        return Err(field(format!(
            "the environment variable `{var}` is not set; it must hold the API key"
        )));
    };
    ApiKey::new(value).map_err(|e| field(format!("the variable `{var}`: {}", e.message())))
}

/// `{base_url}/chat/completions`, for an absolute `http` or `https` URL with a host and no
/// credentials, query or fragment.
fn endpoint(base_url: &str) -> Result<Url, String> {
    let url = Url::parse(base_url)
        .map_err(|e| format!("not a valid URL ({e}); expected http(s)://host[:port]/v1"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "the scheme `{other}` is not supported; use http:// or https://"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not supported; name the key's variable in api_key_env"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the base URL must not have a query or a fragment".to_owned());
    }
    let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
    let mut endpoint = url;
    endpoint.set_path(&path);
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(base_url: &str) -> LlmSpec {
        LlmSpec {
            base_url: base_url.to_owned(),
            model: "m".to_owned(),
            system: None,
            temperature: None,
            max_tokens: None,
            api_key_env: None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn endpoints_append_chat_completions() {
        for (base, expected) in [
            (
                "http://127.0.0.1:8080/v1",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8080/v1/",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "https://api.example.com",
                "https://api.example.com/chat/completions",
            ),
        ] {
            let checked = spec(base).check(&no_env).unwrap();
            assert_eq!(checked.endpoint.as_str(), expected);
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(LlmSpec, &str, &str)> = vec![
            (spec("ftp://x/v1"), "base_url", "scheme `ftp`"),
            (spec("/v1"), "base_url", "not a valid URL"),
            (spec("http://u:p@x/v1"), "base_url", "credentials"),
            (spec("http://x/v1?a=1"), "base_url", "query"),
            (
                LlmSpec {
                    model: " ".into(),
                    ..spec("http://x/v1")
                },
                "model",
                "must name",
            ),
            (
                LlmSpec {
                    temperature: Some(2.5),
                    ..spec("http://x/v1")
                },
                "temperature",
                "from 0 to 2",
            ),
            (
                LlmSpec {
                    temperature: Some(f64::NAN),
                    ..spec("http://x/v1")
                },
                "temperature",
                "from 0 to 2",
            ),
            (
                LlmSpec {
                    max_tokens: Some(0),
                    ..spec("http://x/v1")
                },
                "max_tokens",
                "from 1",
            ),
            (
                LlmSpec {
                    api_key_env: Some("sk-abc123".into()),
                    ..spec("http://x/v1")
                },
                "api_key_env",
                "not an environment variable name",
            ),
            (
                LlmSpec {
                    api_key_env: Some("FLOCK_NO_SUCH_KEY".into()),
                    ..spec("http://x/v1")
                },
                "api_key_env",
                "is not set",
            ),
        ];
        for (spec, field, expected) in cases {
            let error = spec.check(&no_env).unwrap_err();
            assert_eq!(error.field_name(), Some(field), "{error}");
            assert!(error.message().contains(expected), "{error}");
        }
    }

    #[test]
    fn the_key_comes_from_the_named_variable_and_never_shows() {
        let env = |name: &str| (name == "MY_KEY").then(|| "sk-very-secret".to_owned());
        let checked = LlmSpec {
            api_key_env: Some("MY_KEY".into()),
            ..spec("https://api.example.com/v1")
        }
        .check(&env)
        .unwrap();
        let key = checked.api_key.as_ref().unwrap();
        assert_eq!(key.expose(), "sk-very-secret");
        let shown = format!("{checked:?} {key:?}");
        assert!(!shown.contains("very-secret"), "{shown}");

        let bad = |name: &str| (name == "MY_KEY").then(|| "sk-very-secret\n".to_owned());
        let error = LlmSpec {
            api_key_env: Some("MY_KEY".into()),
            ..spec("https://api.example.com/v1")
        }
        .check(&bad)
        .unwrap_err();
        assert!(error.message().contains("line break"), "{error}");
        assert!(!error.to_string().contains("very-secret"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = serde_json::from_str::<LlmSpec>(
            r#"{"base_url": "http://x/v1", "model": "m", "api_key": "sk-1"}"#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `api_key`"),
            "{error}"
        );
    }
}
