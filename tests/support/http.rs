//! A small blocking HTTP helper that returns status, headers and body.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub fn client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(4)
        .build()
        .expect("http client")
}

/// Sends a request with an optional form body.
pub fn send(method: &str, url: &str, form: Option<&str>) -> Result<Reply, reqwest::Error> {
    send_with(&client(Duration::from_secs(10)), method, url, form)
}

pub fn send_with(
    c: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    form: Option<&str>,
) -> Result<Reply, reqwest::Error> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = c.request(m, url);
    if let Some(f) = form {
        rb = rb
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(f.to_string());
    }
    let resp = rb.send()?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text()?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn get(url: &str) -> Result<Reply, reqwest::Error> {
    send("GET", url, None)
}

pub fn put(url: &str, form: &str) -> Result<Reply, reqwest::Error> {
    send("PUT", url, Some(form))
}
