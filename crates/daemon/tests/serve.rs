//! berthd served in-process: health checks and ttrpc event forwarding.

// Test helpers outside #[test] fns: a failed setup should just panic.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use berth_api::client::Client;
use berth_api::containerd::services::events::v1::SubscribeRequest;
use berth_api::containerd::services::events::v1::events_client::EventsClient;
use berth_daemon::Config;
use tokio::sync::oneshot;

struct Served {
    _dir: tempfile::TempDir,
    address: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<berth_daemon::Result<()>>,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        ..Default::default()
    };
    config.grpc.address = dir.path().join("state/d.sock");
    let address = config.grpc.address.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(berth_daemon::run_until(config, async {
        let _ = rx.await;
    }));
    for _ in 0..2000 {
        if tokio::net::UnixStream::connect(&address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Served {
        _dir: dir,
        address,
        stop: Some(tx),
        task,
    }
}

impl Served {
    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops");
        result.expect("task joins").expect("daemon exits cleanly");
        assert!(!self.address.exists(), "socket removed on shutdown");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_reports_serving() {
    let served = serve().await;
    let client = Client::connect(&served.address).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel());
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ttrpc_forward_reaches_grpc_subscribers() {
    use berth_api::containerd::services::events::ttrpc::v1 as ttrpc_events;

    let served = serve().await;
    let client = Client::connect(&served.address).await.unwrap();
    let mut events = EventsClient::new(client.channel());
    let mut stream = events
        .subscribe(SubscribeRequest {
            filters: vec!["topic==\"/tasks/exit\"".to_string()],
        })
        .await
        .unwrap()
        .into_inner();

    // A shim's view: forward an envelope over ttrpc to <address>.ttrpc.
    let mut ttrpc_path = served.address.as_os_str().to_owned();
    ttrpc_path.push(".ttrpc");
    let conn =
        ttrpc::asynchronous::Client::connect(&format!("unix://{}", ttrpc_path.to_string_lossy()))
            .await
            .unwrap();
    let shim = ttrpc_events::EventsClient::new(conn);
    let envelope = berth_api::containerd::types::Envelope {
        timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        namespace: "default".to_string(),
        topic: "/tasks/exit".to_string(),
        event: Some(prost_types::Any {
            type_url: "containerd.events.TaskExit".to_string(),
            value: vec![10, 2, b'c', b'1'],
        }),
    };
    shim.forward(
        ttrpc::context::with_timeout(5_000_000_000),
        &ttrpc_events::ForwardRequest {
            envelope: Some(envelope.clone()),
        },
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("event arrives")
        .unwrap()
        .expect("stream open");
    assert_eq!(got.topic, "/tasks/exit");
    assert_eq!(got.namespace, "default");
    assert_eq!(got.event, envelope.event);
    assert_eq!(got.timestamp, envelope.timestamp);

    // A malformed envelope (bad topic) is refused with InvalidArgument.
    let mut bad = envelope;
    bad.topic = "no-slash".to_string();
    let err = shim
        .forward(
            ttrpc::context::with_timeout(5_000_000_000),
            &ttrpc_events::ForwardRequest {
                envelope: Some(bad),
            },
        )
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("InvalidArgument") && format!("{err:?}").contains("topic"),
        "{err:?}"
    );
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_resources_round_trip() {
    use berth_api::containerd::services::leases::v1::leases_client::LeasesClient;
    use berth_api::containerd::services::leases::v1::{
        AddResourceRequest, CreateRequest, DeleteResourceRequest, ListRequest,
        ListResourcesRequest, Resource,
    };

    let served = serve().await;
    let client = Client::connect(&served.address)
        .await
        .unwrap()
        .with_namespace("default");
    let mut leases = LeasesClient::with_interceptor(client.channel(), client.interceptor());
    leases
        .create(CreateRequest {
            id: "l1".to_string(),
            labels: [(
                "containerd.io/gc.expire".to_string(),
                "2099-01-01T00:00:00Z".to_string(),
            )]
            .into(),
        })
        .await
        .unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let resource = Resource {
        id: digest.clone(),
        r#type: "content".to_string(),
    };
    leases
        .add_resource(AddResourceRequest {
            id: "l1".to_string(),
            resource: Some(resource.clone()),
        })
        .await
        .unwrap();
    let listed = leases
        .list_resources(ListResourcesRequest {
            id: "l1".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert_eq!(listed, vec![resource.clone()]);
    // Filters apply to List.
    let found = leases
        .list(ListRequest {
            filters: vec!["id==l1".to_string()],
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(found.len(), 1);
    let none = leases
        .list(ListRequest {
            filters: vec!["id==other".to_string()],
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(none.is_empty());
    leases
        .delete_resource(DeleteResourceRequest {
            id: "l1".to_string(),
            resource: Some(resource),
        })
        .await
        .unwrap();
    let listed = leases
        .list_resources(ListResourcesRequest {
            id: "l1".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(listed.is_empty());
    // An unknown lease is NotFound.
    let err = leases
        .list_resources(ListResourcesRequest {
            id: "nope".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    drop(leases);
    drop(client);
    served.shutdown().await;
}

/// Runs Debian's `ctr` against `address`; returns stdout, panics with stderr on failure.
fn ctr(address: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("/usr/bin/ctr")
        .arg("--address")
        .arg(address)
        .args(args)
        .output()
        .expect("run ctr (cargo xtask deps installs it)");
    assert!(
        out.status.success(),
        "ctr {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers and images created over gRPC, then seen and changed by `ctr`.
#[tokio::test(flavor = "multi_thread")]
async fn containers_and_images_through_grpc_and_ctr() {
    use berth_api::containerd::services::containers::v1 as cpb;
    use berth_api::containerd::services::images::v1 as ipb;
    use berth_api::containerd::types::Descriptor;

    let served = serve().await;
    let client = Client::connect(&served.address)
        .await
        .unwrap()
        .with_namespace("default");
    let mut images =
        ipb::images_client::ImagesClient::with_interceptor(client.channel(), client.interceptor());
    let digest = format!("sha256:{}", "ab".repeat(32));
    images
        .create(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: "docker.io/library/busybox:latest".into(),
                target: Some(Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: digest.clone(),
                    size: 123,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            source_date_epoch: None,
        })
        .await
        .unwrap();
    let dup = images
        .create(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: "docker.io/library/busybox:latest".into(),
                target: Some(Descriptor {
                    media_type: "x".into(),
                    digest: digest.clone(),
                    size: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            source_date_epoch: None,
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);

    let mut containers = cpb::containers_client::ContainersClient::with_interceptor(
        client.channel(),
        client.interceptor(),
    );
    for id in ["web", "db"] {
        containers
            .create(cpb::CreateContainerRequest {
                container: Some(cpb::Container {
                    id: id.into(),
                    image: "docker.io/library/busybox:latest".into(),
                    runtime: Some(cpb::container::Runtime {
                        name: "io.containerd.runc.v2".into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: br#"{"ociVersion":"1.1.0"}"#.to_vec(),
                    }),
                    snapshotter: "overlayfs".into(),
                    snapshot_key: id.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let no_spec = containers
        .create(cpb::CreateContainerRequest {
            container: Some(cpb::Container {
                id: "bad".into(),
                runtime: Some(cpb::container::Runtime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(no_spec.code(), tonic::Code::InvalidArgument);

    let address = served.address.clone();
    let (ls, info, labels, images_ls, filtered) = tokio::task::spawn_blocking(move || {
        let ls = ctr(&address, &["containers", "ls"]);
        let info = ctr(&address, &["containers", "info", "web"]);
        let labels = ctr(&address, &["containers", "label", "web", "tier=front"]);
        ctr(&address, &["containers", "rm", "db"]);
        let images_ls = ctr(&address, &["images", "ls"]);
        ctr(
            &address,
            &["images", "label", "docker.io/library/busybox:latest", "k=v"],
        );
        let filtered = ctr(&address, &["containers", "ls", "labels.tier==front"]);
        (ls, info, labels, images_ls, filtered)
    })
    .await
    .unwrap();
    assert!(
        ls.contains("web") && ls.contains("db") && ls.contains("io.containerd.runc.v2"),
        "{ls}"
    );
    assert!(info.contains("\"ociVersion\": \"1.1.0\""), "{info}");
    assert!(labels.contains("tier=front"), "{labels}");
    assert!(
        images_ls.contains("docker.io/library/busybox:latest") && images_ls.contains(&digest),
        "{images_ls}"
    );
    assert!(
        filtered.contains("web") && !filtered.contains("db"),
        "{filtered}"
    );
    let left = containers
        .list(cpb::ListContainersRequest { filters: vec![] })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].labels.get("tier").map(String::as_str),
        Some("front")
    );
    let image = images
        .get(ipb::GetImageRequest {
            name: "docker.io/library/busybox:latest".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(image.labels.get("k").map(String::as_str), Some("v"));
    served.shutdown().await;
}

/// `GET path` on 127.0.0.1:`port`: the status line and the body.
async fn http_get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_debug_endpoints_in_process() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        ..Default::default()
    };
    config.grpc.address = dir.path().join("state/d.sock");
    // One address for both endpoints.
    config.metrics.address = format!("127.0.0.1:{port}");
    config.debug.address = config.metrics.address.clone();
    let address = config.grpc.address.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(berth_daemon::run_until(config, async {
        let _ = rx.await;
    }));
    for _ in 0..2000 {
        if tokio::net::UnixStream::connect(&address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = Client::connect(&address).await.unwrap();
    let mut version =
        berth_api::containerd::services::version::v1::version_client::VersionClient::new(
            client.channel(),
        );
    version.version(()).await.unwrap();

    let (status, body) = http_get(port, "/v1/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains(
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"containerd.services.version.v1.Version\",grpc_method=\"Version\",grpc_code=\"OK\"} 1"
        ),
        "{body}"
    );
    assert!(body.contains("berth_shims 0"), "{body}");
    assert!(body.ends_with("# EOF\n"));
    let (status, body) = http_get(port, "/debug/state").await;
    assert!(status.contains("200"), "{status}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(state["plugins"].as_array().unwrap().len() > 5);
    assert_eq!(state["tasks"].as_array().map(Vec::len), Some(0));
    let (status, _) = http_get(port, "/nope").await;
    assert!(status.contains("404"), "{status}");

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("daemon stops")
        .unwrap()
        .unwrap();
    // The endpoint is gone with the daemon.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}
