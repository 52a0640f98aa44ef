//! Running a consumer as a production service, through the real `testq`
//! binary: its metrics scraped by a real Prometheus (`prometheus`), its
//! probes while PostgreSQL stops and starts under it (`probes`), the stop
//! deadline (`stop`), systemd's notify protocol on a real `NOTIFY_SOCKET`
//! (`systemd`) and `status --json` (`status`).

mod probes;
mod prometheus;
mod status;
mod stop;
mod systemd;
mod web;
