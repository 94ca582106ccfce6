//! The request path when the credential is cached: `header_for` (URL parse,
//! allowlist, cache hit, header clone) async and blocking, and the
//! middleware's cost per request against a local HTTP server.
//!
//! `cargo bench -p mlflow-secrets-auth`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mlflow_secrets_auth::{
    AuthMode, Config, FileProvider, HostAllowlist, ProviderSettings, SecretsAuth, blocking,
};
use secrets_testkit::capture::CaptureServer;

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cached credential is returned on the first poll"),
    }
}

fn auth(dir: &tempfile::TempDir) -> SecretsAuth {
    let path = dir.path().join("token");
    std::fs::write(&path, "tok-bench-0123456789").expect("write the secret");
    let mut config = Config::default();
    config.allowlist = HostAllowlist::parse("mlflow.example.com, 127.0.0.1").expect("patterns");
    SecretsAuth::builder()
        .config(config)
        .provider(
            FileProvider::new(&path),
            ProviderSettings {
                auth_mode: AuthMode::Bearer,
                ttl: Duration::from_secs(3600),
            },
        )
        .build()
}

const URL: &str = "https://mlflow.example.com/api/2.0/mlflow/runs/log-metric";

fn header_for(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = auth(&dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(auth.warm()).expect("warm");
    let url = url::Url::parse(URL).expect("url");
    let mut group = c.benchmark_group("header_for_warm");
    group.bench_function("str_url", |b| {
        b.iter(|| black_box(poll_once(auth.header_for(black_box(URL)))))
    });
    group.bench_function("parsed_url", |b| {
        b.iter(|| black_box(poll_once(auth.header_for_url(black_box(&url)))))
    });
    group.bench_function("disallowed_host", |b| {
        b.iter(|| black_box(poll_once(auth.header_for("https://evil.example.com/"))))
    });
    let sync = blocking::SecretsAuth::new(auth.clone()).expect("blocking");
    group.bench_function("blocking", |b| b.iter(|| black_box(sync.header_for(URL))));
    group.finish();
}

fn middleware(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = auth(&dir);
    let server = CaptureServer::start();
    let url = format!("{}/api/2.0/mlflow/experiments/search", server.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let with = mlflow_secrets_auth::middleware::client(auth).expect("client");
    let without = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut group = c.benchmark_group("request_to_local_server");
    group.sample_size(50);
    group.bench_function("plain_reqwest", |b| {
        b.iter(|| runtime.block_on(async { without.get(&url).send().await.expect("sent") }))
    });
    group.bench_function("with_middleware", |b| {
        b.iter(|| runtime.block_on(async { with.get(&url).send().await.expect("sent") }))
    });
    group.finish();
}

criterion_group!(benches, header_for, middleware);
criterion_main!(benches);
