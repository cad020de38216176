//! The metrics and dashboard endpoints from tests: GET (the client of `fedcsg_wire`), and a
//! free loopback port for a process that must be told its address.

/// The status and body of `GET path` at `addr`, with `Authorization: Bearer token` if given.
pub async fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    fedcsg_wire::metrics_http::get(addr, path, token)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// A loopback port free right now (for a child process's listen flag).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
