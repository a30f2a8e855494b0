mod embedded;
use pglogsink::embedded::EmbeddedPostgres;
fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut t = embedded::trials();
    t.push(libtest_mimic::Trial::test("scratch::messages", || {
        let e = EmbeddedPostgres::start("/root/pgx").unwrap_err();
        eprintln!("UNREACH: {e}");
        std::env::set_var("PGLOGSINK_PG_BIN", "/nonexistent");
        let e = EmbeddedPostgres::temporary().unwrap_err();
        eprintln!("BADBIN: {e}");
        std::env::remove_var("PGLOGSINK_PG_BIN");
        // stale pid file
        let dir = std::env::temp_dir().join(format!("pgl-stale-{}", std::process::id()));
        let pg = EmbeddedPostgres::start(&dir).unwrap();
        eprintln!("DEBUG: {pg:?}");
        let pid = std::fs::read_to_string(dir.join("pgdata/postmaster.pid")).unwrap();
        let pid: i32 = pid.lines().next().unwrap().parse().unwrap();
        eprintln!("pgid ours {} server {}", unsafe{libc::getpgid(0)}, unsafe{libc::getpgid(pid)});
        // kill -9 the postmaster -> stale pid file
        unsafe { libc::kill(pid, libc::SIGKILL); }
        std::thread::sleep(std::time::Duration::from_millis(500));
        // children may linger briefly
        std::mem::forget(pg);
        std::thread::sleep(std::time::Duration::from_secs(2));
        let a = EmbeddedPostgres::attach(&dir).unwrap();
        eprintln!("attach after kill: {:?}", a.is_some());
        let t0 = std::time::Instant::now();
        let pg = EmbeddedPostgres::start(&dir);
        eprintln!("start after kill: {:?} in {:?}", pg.as_ref().map(|p| p.owns_server()).map_err(|e| e.to_string()), t0.elapsed());
        // inside a tokio runtime
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { let t = EmbeddedPostgres::temporary().unwrap(); eprintln!("in runtime ok port {}", t.port()); });
        drop(pg);
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }));
    libtest_mimic::run(&args, t).exit();
}
