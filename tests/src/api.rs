//! A small client of the HTTP API for tests: publish, sync publish, GET as JSON, the delivery
//! list polled until it settles, and Prometheus metrics read by name and labels.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

/// The API of one server.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// The API at `address`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(address: SocketAddr) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Api {
            base: format!("http://{address}"),
            client,
        })
    }

    /// `http://address{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON; returns the status and the JSON answer.
    ///
    /// # Errors
    /// No answer, or an answer that is not JSON.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let value = response
            .json()
            .await
            .with_context(|| format!("POST {path}: the answer is not JSON"))?;
        Ok((status, value))
    }

    /// `POST /api/v1/artifacts`; checks the 202 and returns the correlation id.
    ///
    /// # Errors
    /// Another status, or no correlation id.
    pub async fn publish(&self, body: &Value) -> anyhow::Result<String> {
        let (status, answer) = self.post("/api/v1/artifacts", body).await?;
        anyhow::ensure!(status == 202, "publish answered {status}: {answer}");
        answer["correlation_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no correlation id in {answer}"))
    }

    /// `POST /api/v1/artifacts/sync`; checks the 200 and returns the answer.
    ///
    /// # Errors
    /// Another status.
    pub async fn publish_sync(&self, body: &Value) -> anyhow::Result<Value> {
        let (status, answer) = self.post("/api/v1/artifacts/sync", body).await?;
        anyhow::ensure!(status == 200, "sync publish answered {status}: {answer}");
        Ok(answer)
    }

    /// GETs `path`; checks the 200 and returns the JSON answer.
    ///
    /// # Errors
    /// Another status, or an answer that is not JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let value: Value = response.json().await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {value}");
        Ok(value)
    }

    /// `GET /metrics` as text.
    ///
    /// # Errors
    /// No answer, or not a 200.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self.client.get(self.url("/metrics")).send().await?;
        anyhow::ensure!(
            response.status() == 200,
            "GET /metrics: {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// `GET /api/v1/correlations/{id}/webhooks`, polled until `done` holds for the deliveries,
    /// at most `limit`.
    ///
    /// # Errors
    /// `done` never held (the error shows the last list).
    pub async fn deliveries_until(
        &self,
        correlation: &str,
        limit: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let body = self
                .get_json(&format!("/api/v1/correlations/{correlation}/webhooks"))
                .await?;
            let deliveries = body["deliveries"]
                .as_array()
                .cloned()
                .with_context(|| format!("no deliveries in {body}"))?;
            if done(&deliveries) {
                return Ok(deliveries);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the deliveries did not settle within {limit:?}: {deliveries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The value of the Prometheus sample `name` whose labels include every pair of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            if all { value.parse().ok() } else { None }
        })
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn reads_samples_by_name_and_labels() {
        let text = "# TYPE a counter\na{result=\"success\"} 3\na{result=\"http_status\"} 2\nb 7\nb_sum 1.5\n";
        assert_eq!(metric(text, "a", &[("result", "success")]), Some(3.0));
        assert_eq!(metric(text, "a", &[("result", "http_status")]), Some(2.0));
        assert_eq!(metric(text, "b", &[]), Some(7.0));
        assert_eq!(metric(text, "a", &[("result", "timeout")]), None);
        assert_eq!(metric(text, "c", &[]), None);
    }
}
