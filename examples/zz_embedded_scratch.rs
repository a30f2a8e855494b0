use pglogsink::embedded::EmbeddedPostgres;
use std::io::Write;
fn main() {
    let pg = EmbeddedPostgres::temporary().unwrap();
    pg.stop_server().unwrap();
    let l = std::net::TcpListener::bind(("127.0.0.1", pg.port())).unwrap();
    println!("PORT TAKEN: {}", pg.start_server().unwrap_err());
    drop(l);
    pg.start_server().unwrap();
    let conf = pg.data_dir().join("pgdata/postgresql.conf");
    pg.stop_server().unwrap();
    std::fs::OpenOptions::new().append(true).open(&conf).unwrap().write_all(b"shared_buffers = 'bogus'\n").unwrap();
    println!("BAD CONF: {}", pg.start_server().unwrap_err());
    drop(pg);
}
