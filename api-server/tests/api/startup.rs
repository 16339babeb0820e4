//! Start-up against a PostgreSQL that is not reachable yet.

use std::time::{Duration, Instant};

use terarchitect_api_server::Config;
use terarchitect_api_server::server::open_database;
use terarchitect_api_server::testing::pg_cluster;
use tokio::net::{TcpListener, UnixStream};

fn config(url: &str, timeout_sec: u64) -> Config {
    let mut cfg = Config::for_tests("unused.db".into());
    cfg.database_url = Some(url.to_owned());
    cfg.db_connect_timeout_sec = timeout_sec;
    cfg
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_database_fails_after_the_connect_timeout() {
    let port = closed_port().await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/db");
    let started = Instant::now();
    let Err(err) = open_database(&config(&url, 1)).await else {
        panic!("connected to a closed port");
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "retried for {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "gave up after {waited:?}");
    assert!(err.to_string().contains("database error"), "{err}");
}

#[tokio::test]
async fn the_server_waits_for_a_database_that_starts_later() {
    let unix_url = pg_cluster().create_database().await;
    // postgres://postgres@localhost/<db>?host=<socket dir>
    let (db, socket_dir) = unix_url
        .trim_start_matches("postgres://postgres@localhost/")
        .split_once("?host=")
        .map(|(d, h)| (d.to_owned(), h.to_owned()))
        .unwrap();
    let port = closed_port().await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/{db}");
    // The database "comes up" (a TCP front for its socket) two seconds from now.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = format!("{socket_dir}/.s.PGSQL.5432");
            tokio::spawn(async move {
                if let Ok(mut unix) = UnixStream::connect(socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    let started = Instant::now();
    let db = open_database(&config(&url, 30))
        .await
        .expect("connected once the database came up");
    assert!(started.elapsed() >= Duration::from_secs(1));
    db.close().await;
}
