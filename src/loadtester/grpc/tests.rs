//! Against a real HTTP/2 gRPC server on loopback (hyper's, answering the health check as grpc-go does).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;
use crate::loadtester::command::parse;
use crate::loadtester::load::{LoadRunner, NativeLoad};

/// The messages each call carried, by path.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Serves `/grpc.health.v1.Health/Check` (SERVING, grpc-status 0 in the trailers); any other method gets
/// a trailers-only UNIMPLEMENTED (12), as gRPC servers answer.
async fn grpc_server() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(body[0], 0, "not compressed");
                        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                        log.lock()
                            .unwrap()
                            .push((path.clone(), body[5..5 + len].to_vec()));
                        let response = if path == "/grpc.health.v1.Health/Check" {
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            // HealthCheckResponse { status: SERVING (1) }, framed.
                            let frames = vec![
                                Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[
                                    0, 0, 0, 0, 2, 0x08, 0x01,
                                ]))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(BoxBody::new(StreamBody::new(stream::iter(frames))))
                        } else {
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "12")
                                .body(BoxBody::new(Full::new(Bytes::new())))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr.to_string(), seen)
}

#[test]
fn messages_that_need_no_proto_are_encoded_and_others_refused() {
    assert_eq!(request_message(HEALTH_CHECK, None).unwrap(), Bytes::new());
    assert_eq!(request_message("a.B/C", Some("{}")).unwrap(), Bytes::new());
    assert_eq!(
        request_message(HEALTH_CHECK, Some(r#"{"service":""}"#)).unwrap(),
        Bytes::new()
    );
    assert_eq!(
        request_message(HEALTH_CHECK, Some(r#"{"service":"podinfo"}"#)).unwrap()[..],
        b"\x0a\x07podinfo"[..]
    );
    let err = request_message("a.B/C", Some(r#"{"name":"x"}"#)).unwrap_err();
    assert!(err.contains("a.B/C's proto"), "{err}");
    assert!(request_message(HEALTH_CHECK, Some("{")).is_err());
}

#[tokio::test]
async fn a_call_passes_on_grpc_status_0_and_fails_on_any_other_or_no_answer() {
    let (addr, seen) = grpc_server().await;
    let client = GrpcClient::default();
    let t = Duration::from_secs(5);
    assert_eq!(
        client
            .call(&addr, HEALTH_CHECK, Bytes::from_static(b"\x0a\x01x"), t)
            .await,
        Outcome::Ok
    );
    assert_eq!(
        client.call(&addr, "a.B/Missing", Bytes::new(), t).await,
        Outcome::Failed,
        "a trailers-only answer carries the status in its headers"
    );
    assert_eq!(
        seen.lock().unwrap()[0],
        (
            "/grpc.health.v1.Health/Check".to_string(),
            b"\x0a\x01x".to_vec()
        )
    );
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert_eq!(
        client.call(&dead, HEALTH_CHECK, Bytes::new(), t).await,
        Outcome::NoAnswer
    );
}

#[tokio::test]
async fn a_ghz_command_line_runs_its_calls_natively() {
    let (addr, seen) = grpc_server().await;
    let spec = parse(&format!(
        r#"ghz -n 20 -c 2 --insecure --call grpc.health.v1.Health/Check -d '{{"service":"podinfo"}}' {addr}"#
    ))
    .unwrap();
    let report = NativeLoad::new().unwrap().run(spec).await.unwrap();
    assert_eq!((report.requests, report.ok, report.failed), (20, 20, 0));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|(_, m)| m == b"\x0a\x07podinfo"));
}
