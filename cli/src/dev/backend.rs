//! The demo backends `gwctl dev` starts: tiny HTTP/1.1 servers that say who answered.
//!
//! Each answers `GET /data`, `POST /data` and `GET /health` with a JSON body naming itself,
//! the method and the path it received (so stripping `/api` is visible), and the header
//! `x-backend: <name>`; a POST also reports how many body bytes arrived. Anything else is a
//! JSON 404 (405 for a known path with another method). Self-contained on purpose: a newcomer
//! reading the demo sees everything a backend needs to do.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The demo backends, in `--backend-ports` order.
pub const BACKEND_NAMES: [&str; 3] = ["service-a", "service-b", "service-c"];
/// Time open connections get to finish on shutdown. Demo requests are instant; this only
/// bounds how long a stuck client can delay Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves the demo backend `name` on `listener` until `stop` turns true, then closes the
/// listener, lets open connections finish their current request and returns.
pub async fn serve(name: &'static str, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(backend = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut stop = stop.clone();
        conns.spawn(async move {
            let service =
                service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req).await) });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(backend = name, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.shutdown().await;
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not across an await.
    let _ = stop.wait_for(|s| *s).await;
}

/// Builds backend `name`'s answer to one request.
pub async fn answer(name: &'static str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let mut doc = json!({ "backend": name, "method": parts.method.as_str(), "path": path });
    let status = match (path, &parts.method) {
        ("/data", &Method::GET) | ("/health", &Method::GET) => StatusCode::OK,
        ("/data", &Method::POST) => {
            // Counted frame by frame, never held whole.
            let mut body = body;
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            bytes += data.len() as u64;
                        }
                    }
                    Err(_) => return reply(name, StatusCode::BAD_REQUEST, doc),
                }
            }
            doc["body_bytes"] = bytes.into();
            StatusCode::OK
        }
        ("/data" | "/health", _) => {
            doc["error"] = "method not allowed; /data takes GET and POST, /health GET".into();
            StatusCode::METHOD_NOT_ALLOWED
        }
        _ => {
            doc["error"] = "not found; try GET or POST /data, or GET /health".into();
            StatusCode::NOT_FOUND
        }
    };
    reply(name, status, doc)
}

fn reply(name: &'static str, status: StatusCode, doc: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(doc.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-backend", HeaderValue::from_static(name));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper::client::conn::http1 as client;

    /// Sends each request over one connection to a backend on port 0 and checks the answers.
    #[tokio::test]
    async fn answers_with_its_name_method_and_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve("service-x", listener, stop_rx));

        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
        let conn = tokio::spawn(conn);

        let cases: [(
            Method,
            &str,
            Option<&'static str>,
            StatusCode,
            serde_json::Value,
        ); 6] = [
            (
                Method::GET,
                "/data",
                None,
                StatusCode::OK,
                json!({"backend": "service-x", "method": "GET", "path": "/data"}),
            ),
            (
                Method::POST,
                "/data",
                Some("hello"),
                StatusCode::OK,
                json!({"backend": "service-x", "method": "POST", "path": "/data",
                       "body_bytes": 5}),
            ),
            (
                Method::GET,
                "/health",
                None,
                StatusCode::OK,
                json!({"backend": "service-x", "method": "GET", "path": "/health"}),
            ),
            (
                Method::GET,
                "/data?x=1",
                None,
                StatusCode::OK,
                json!({"backend": "service-x", "method": "GET", "path": "/data"}),
            ),
            (
                Method::DELETE,
                "/data",
                None,
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"backend": "service-x", "method": "DELETE", "path": "/data",
                       "error": "method not allowed; /data takes GET and POST, /health GET"}),
            ),
            (
                Method::GET,
                "/api/data",
                None,
                StatusCode::NOT_FOUND,
                json!({"backend": "service-x", "method": "GET", "path": "/api/data",
                       "error": "not found; try GET or POST /data, or GET /health"}),
            ),
        ];
        for (method, path, body, want_status, want_body) in cases {
            let builder = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", "backend");
            let response = match body {
                Some(b) => sender
                    .send_request(builder.body(Full::new(Bytes::from(b)).boxed()).unwrap())
                    .await
                    .unwrap(),
                None => sender
                    .send_request(
                        builder
                            .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
                            .unwrap(),
                    )
                    .await
                    .unwrap(),
            };
            assert_eq!(response.status(), want_status, "{method} {path}");
            assert_eq!(response.headers()["x-backend"], "service-x");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, want_body, "{method} {path}");
        }

        // Stop closes the idle keep-alive connection and the listener, and serve returns.
        stop_tx.send(true).unwrap();
        server.await.unwrap();
        conn.await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
