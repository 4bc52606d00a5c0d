//! A BHR API over HTTP (catchd's, or the original BHR's): the only HTTP client in catchd.

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{QueueRow, Source, SourceError, UnblockRow};
use crate::api::bhr::{Iso, timestamp};
use crate::enforce::Rule;
use crate::time::{Interval, Time};

/// The timeout of every request, on top of a long poll's wait (the client's 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The end given to a queued block that is no longer in the expected list (it ended
/// between the two requests): long enough to be removed through the unblock queue.
const GONE: Interval = Interval::from_secs(60);

/// A BHR server.
pub struct Remote {
    base: String,
    token: String,
    ident: String,
    http: reqwest::Client,
    /// Rows of `list.csv` that could not be read and were skipped, so far.
    bad_rows: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct RawQueueRow {
    id: u64,
    cidr: String,
    added: String,
}

#[derive(Deserialize)]
struct RawBrief {
    cidr: String,
}

#[derive(Deserialize)]
struct RawUnblockRow {
    id: u64,
    block: RawBrief,
}

fn net(what: &str, text: &str) -> Result<IpNet, SourceError> {
    text.parse::<IpNet>()
        .map(|n| crate::addr::canonical_net(n.trunc()))
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|a| IpNet::from(crate::addr::canonical_ip(a)))
        })
        .map_err(|_| SourceError::Answer {
            what: what.to_string(),
            detail: format!("bad cidr {text:?}"),
        })
}

impl Remote {
    /// A client of the server at `base` (`http://host:port`, as `BHR_HOST`), with an API
    /// token, for `ident`.
    ///
    /// # Errors
    /// The HTTP client could not be built (TLS set-up).
    pub fn new(base: &str, token: &str, ident: &str) -> Result<Remote, SourceError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("catchd/", env!("CARGO_PKG_VERSION")));
        let https = base.starts_with("https://");
        if !https {
            // Plain HTTP needs no certificate store (a minimal system has none, and the
            // platform verifier refuses to start without one).
            builder = builder.tls_certs_only([]);
        }
        let http = builder.build().map_err(|e| {
            let mut msg = format!("cannot set up the HTTP client: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            if https {
                msg.push_str(" (for https:// the system's CA certificates are needed: apt-get install ca-certificates)");
            }
            SourceError::Transport(msg)
        })?;
        Ok(Remote {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            ident: ident.to_string(),
            http,
            bad_rows: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn ident_path(&self) -> String {
        // Idents are names such as bgp1; anything else is escaped.
        let mut s = String::new();
        for b in self.ident.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                s.push(b as char);
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        s
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Vec<u8>, SourceError> {
        let resp = req
            .header("Authorization", format!("Token {}", self.token))
            .header("Accept", "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| SourceError::Transport(format!("{what}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| SourceError::Transport(format!("{what}: {e}")))?;
        if !status.is_success() {
            let mut text = String::from_utf8_lossy(&body).into_owned();
            text.truncate(text.char_indices().nth(300).map_or(text.len(), |(i, _)| i));
            return Err(SourceError::Status {
                what: what.to_string(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(body.to_vec())
    }

    fn json<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, SourceError> {
        serde_json::from_slice(b).map_err(|e| SourceError::Answer {
            what: what.to_string(),
            detail: e.to_string(),
        })
    }

    /// `POST /api/v1/cr/drop` (catchd only): catch-and-release for `addr`.
    ///
    /// # Errors
    /// [`SourceError`].
    pub async fn cr_drop(&self, addr: std::net::IpAddr, location: &str) -> Result<(), SourceError> {
        let body = serde_json::json!({"addr": addr.to_string(), "location": location});
        self.send(
            "cr/drop",
            self.http.post(self.url("/api/v1/cr/drop")).json(&body),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `POST /bhr/api/block`: a block of `net` for `seconds`.
    ///
    /// # Errors
    /// [`SourceError`].
    pub async fn block(
        &self,
        net: IpNet,
        source: &str,
        why: &str,
        seconds: i64,
    ) -> Result<(), SourceError> {
        let body = serde_json::json!({
            "cidr": net.to_string(),
            "source": source,
            "why": why,
            "duration": seconds,
        });
        self.send(
            "block",
            self.http.post(self.url("/bhr/api/block")).json(&body),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `list.csv` (optionally `since`): network → (end, why).
    async fn list(&self, since: Option<Time>) -> Result<Vec<Rule>, SourceError> {
        let mut req = self.http.get(self.url("/bhr/list.csv"));
        if let Some(t) = since {
            req = req.query(&[("since", Iso(t).to_string())]);
        }
        let body = self.send("list.csv", req, REQUEST_TIMEOUT * 4).await?;
        let bad = |d: String| SourceError::Answer {
            what: "list.csv".into(),
            detail: d,
        };
        let mut rd = csv::Reader::from_reader(&body[..]);
        let headers = rd.headers().map_err(|e| bad(e.to_string()))?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(ci), Some(ui)) = (col("cidr"), col("unblock_at")) else {
            return Err(bad("no cidr or unblock_at column".into()));
        };
        let wi = col("why");
        let mut out = Vec::new();
        // A row that cannot be read is skipped (and counted and logged): one bad row must
        // not stop the manager from reconciling every other block.
        let mut skipped = 0u64;
        for (n, rec) in rd.records().enumerate() {
            let row = || -> Result<Rule, String> {
                let rec = rec.map_err(|e| e.to_string())?;
                let text = rec.get(ci).unwrap_or("");
                let cidr = net("list.csv", text).map_err(|_| format!("bad cidr {text:?}"))?;
                let until = match rec.get(ui).unwrap_or("").trim() {
                    "" => None,
                    t => Some(timestamp(t).ok_or_else(|| format!("bad unblock_at {t:?}"))?),
                };
                let why = wi.and_then(|i| rec.get(i)).unwrap_or("").to_string();
                Ok(Rule { cidr, until, why })
            };
            match row() {
                Ok(r) => out.push(r),
                Err(e) => {
                    skipped += 1;
                    if skipped <= 3 {
                        tracing::warn!(row = n + 2, "list.csv: skipping a row: {e}");
                    }
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "list.csv: rows skipped because they could not be read"
            );
            self.bad_rows
                .fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(out)
    }
}

impl Source for Remote {
    fn ident(&self) -> &str {
        &self.ident
    }

    fn now(&self) -> Time {
        Time::now()
    }

    async fn queue(&self, wait: Duration, since: Time) -> Result<Vec<QueueRow>, SourceError> {
        let what = format!("queue/{}", self.ident);
        let req = self
            .http
            .get(self.url(&format!("/bhr/api/queue/{}", self.ident_path())))
            .query(&[
                ("timeout", wait.as_secs().to_string()),
                ("added_since", Iso(since).to_string()),
            ]);
        let body = self.send(&what, req, REQUEST_TIMEOUT + wait).await?;
        let raw: Vec<RawQueueRow> = Self::json(&what, &body)?;
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(raw.len());
        for r in raw {
            let added = timestamp(&r.added).ok_or_else(|| SourceError::Answer {
                what: what.clone(),
                detail: format!("bad added {:?}", r.added),
            })?;
            let cidr = net(&what, &r.cidr)?;
            rows.push((r.id, added, cidr));
        }
        // Queue rows carry no end: read it from list.csv, for the rows' time span only.
        let first = rows.iter().map(|r| r.1).min().unwrap_or(since);
        let details: HashMap<IpNet, Rule> = self
            .list(Some(first))
            .await?
            .into_iter()
            .map(|r| (r.cidr.trunc(), r))
            .collect();
        let now = self.now();
        Ok(rows
            .into_iter()
            .map(|(id, added, cidr)| {
                let rule = details.get(&cidr.trunc()).cloned().unwrap_or(Rule {
                    cidr,
                    until: Some(now + GONE),
                    why: String::new(),
                });
                QueueRow { id, added, rule }
            })
            .collect())
    }

    async fn set_blocked(&self, ids: &[u64]) -> Result<(), SourceError> {
        let what = format!("set_blocked_multi/{}", self.ident);
        let req = self
            .http
            .post(self.url(&format!("/bhr/api/set_blocked_multi/{}", self.ident_path())))
            .json(&serde_json::json!({ "ids": ids }));
        self.send(&what, req, REQUEST_TIMEOUT).await.map(drop)
    }

    async fn unblock_queue(&self) -> Result<Vec<UnblockRow>, SourceError> {
        let what = format!("unblock_queue/{}", self.ident);
        let req = self
            .http
            .get(self.url(&format!("/bhr/api/unblock_queue/{}", self.ident_path())));
        let body = self.send(&what, req, REQUEST_TIMEOUT).await?;
        let raw: Vec<RawUnblockRow> = Self::json(&what, &body)?;
        raw.into_iter()
            .map(|r| {
                Ok(UnblockRow {
                    id: r.id,
                    cidr: net(&what, &r.block.cidr)?,
                })
            })
            .collect()
    }

    async fn set_unblocked(&self, ids: &[u64]) -> Result<(), SourceError> {
        let req = self
            .http
            .post(self.url("/bhr/api/set_unblocked_multi"))
            .json(&serde_json::json!({ "ids": ids }));
        self.send("set_unblocked_multi", req, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    async fn expected(&self) -> Result<Vec<Rule>, SourceError> {
        self.list(None).await
    }

    fn bad_rows(&self) -> u64 {
        self.bad_rows.load(std::sync::atomic::Ordering::Relaxed)
    }
}
