//! The pages, as maud markup: every value spliced in is escaped by maud, so
//! an event whose data is `<script>` shows as that text.

use std::time::Instant;

use maud::{html, Markup, DOCTYPE};
use pgq_consumers::failed::FailedEvent;

use super::chart;
use super::samples::{self, History};
use crate::format;
use crate::snapshot::Snapshot;

/// A link's query string.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// The frame of every page. `refresh`: seconds between live refreshes.
pub fn layout(title: &str, refresh: Option<f64>, logged_in: Option<bool>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pgq-admin" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body data-refresh=[refresh.map(|r| format!("{}", (r * 1000.0).round() as u64))] {
                header {
                    a.home href="/" { "pgq-admin" }
                    span.title { (title) }
                    @match logged_in {
                        None => { span.mode { "read-only" } }
                        Some(false) => { a.mode href="/login" { "log in to write" } }
                        Some(true) => {
                            form.mode method="post" action="/logout" {
                                button type="submit" { "log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The dashboard: who ticks, the queues, the consumers, the groups, with charts.
pub fn dashboard(s: &Snapshot, history: &History, now: Instant) -> Markup {
    html! {
        p #ticking { "Ticking: " (s.ticking.describe()) }
        p.meta {
            "Read at " (s.taken_at.format("%Y-%m-%d %H:%M:%S UTC")) " · framework schema: "
            @match s.framework_version {
                Some(v) => { "pgq_consumer version " (v) }
                None => { "not installed" }
            }
        }
        h2 { "Queues" }
        table #queues {
            thead { tr {
                th { "Queue" } th.n { "Events/s" } th.n { "New" } th.n { "Ticker lag" } th.n { "Last tick" }
                th.n { "Rotation" } th.n { "Table" } th.n { "Tables size" } th { "Ticking" }
                th { "Throughput" } th { "Ticker lag" }
            } }
            tbody {
                @for q in &s.queues {
                    @let series = history.queues.get(&q.name);
                    tr data-queue=(q.name) {
                        td.name { (q.name) }
                        td.n { (format::rate(q.ev_per_sec)) }
                        td.n.new { (format::num(q.ev_new)) }
                        td.n { (format::secs(q.ticker_lag)) }
                        td.n { (format::num(q.last_tick_id)) }
                        td.n { (format::secs(Some(q.rotation_period))) }
                        td.n { (q.cur_table) "/" (q.ntables) }
                        td.n { (format::bytes(q.table_bytes)) }
                        td { @if q.ticker_paused { "paused" } @else if q.external_ticker { "external" } @else { "on" } }
                        td { (chart::line("events/s", "ev/s", &series.map(|x| samples::throughput(x, now)).unwrap_or_default())) }
                        td { (chart::line("ticker lag", "s", &series.map(|x| samples::lag(x, now)).unwrap_or_default())) }
                    }
                }
            }
        }
        @if s.queues.is_empty() { p.empty { "No queues." } }
        h2 { "Consumers" }
        table #consumers {
            thead { tr {
                th { "Queue" } th { "Consumer" } th.n { "Lag" } th.n { "Last seen" } th.n { "Pending" }
                th.n { "Batch" } th.n { "Failed" } th.n { "Sessions" } th { "Throughput" } th { "Lag" }
            } }
            tbody {
                @for c in &s.consumers {
                    @let series = history.consumers.get(&(c.queue.clone(), c.name.clone()));
                    @let link = format!("/failed?{}", query(&[("queue", &c.queue), ("consumer", &c.name)]));
                    tr data-queue=(c.queue) data-consumer=(c.name) {
                        td { (c.queue) }
                        td.name { (c.name) }
                        td.n.lag { (format::secs(c.lag)) }
                        td.n { (format::secs(c.last_seen)) }
                        td.n.pending { (format::num(c.pending_events)) }
                        td.n { (format::num(c.batch)) }
                        td.n.failed {
                            @match c.failed {
                                Some(n) => { a href=(link) { (n) } }
                                None => { "-" }
                            }
                        }
                        td.n { (c.sessions) }
                        td { (chart::line("events/s", "ev/s", &series.map(|x| samples::throughput(x, now)).unwrap_or_default())) }
                        td { (chart::line("lag", "s", &series.map(|x| samples::lag(x, now)).unwrap_or_default())) }
                    }
                }
            }
        }
        @if s.consumers.is_empty() { p.empty { "No consumers." } }
        @if s.consumers.iter().any(|c| !c.subconsumers.is_empty()) {
            h2 { "Cooperative sub-consumers" }
            table #subconsumers {
                thead { tr { th { "Queue" } th { "Consumer" } th { "Sub-consumer" } th.n { "Batch" } th.n { "Last seen" } th { "State" } } }
                tbody {
                    @for c in &s.consumers {
                        @for sub in &c.subconsumers {
                            tr {
                                td { (c.queue) } td { (c.name) } td { (sub.name) }
                                td.n { (format::num(sub.batch)) } td.n { (format::secs(sub.last_seen)) }
                                td { @if sub.handed_back { "handed back" } @else { "registered" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the failed-events page shows.
pub struct FailedView<'a> {
    /// The queue.
    pub queue: &'a str,
    /// The consumer.
    pub consumer: &'a str,
    /// The type filter ("" for none).
    pub ev_type: &'a str,
    /// The text filter ("" for none).
    pub text: &'a str,
    /// The page, from 1.
    pub page: i64,
    /// Events per page.
    pub per_page: i64,
    /// How many match.
    pub total: u64,
    /// This page's events.
    pub events: &'a [FailedEvent],
    /// The session's CSRF token when it may write.
    pub csrf: Option<&'a str>,
    /// What the last write did.
    pub notice: Option<&'a str>,
}

/// A consumer's failed events: filter, pages, and (when allowed) retry and delete.
pub fn failed(v: &FailedView<'_>) -> Markup {
    let pages = (v.total as i64 + v.per_page - 1) / v.per_page;
    let link = |page: i64| {
        format!(
            "/failed?{}",
            query(&[
                ("queue", v.queue),
                ("consumer", v.consumer),
                ("type", v.ev_type),
                ("text", v.text),
                ("page", &page.to_string()),
            ])
        )
    };
    html! {
        @if let Some(n) = v.notice { p #notice { (n) } }
        form #filter method="get" action="/failed" {
            input type="hidden" name="queue" value=(v.queue);
            input type="hidden" name="consumer" value=(v.consumer);
            label { "Type " input type="text" name="type" value=(v.ev_type); }
            label { " Text " input type="text" name="text" value=(v.text); }
            button type="submit" { "Filter" }
        }
        p #count { (v.total) " failed event(s)" @if pages > 1 { ", page " (v.page) " of " (pages) } }
        form #events method="post" action="/failed" {
            input type="hidden" name="queue" value=(v.queue);
            input type="hidden" name="consumer" value=(v.consumer);
            input type="hidden" name="type" value=(v.ev_type);
            input type="hidden" name="text" value=(v.text);
            @if let Some(csrf) = v.csrf { input type="hidden" name="csrf" value=(csrf); }
            table #failed {
                thead { tr {
                    th { "" } th.n { "Event" } th { "Failed at" } th.n { "Retries" } th { "Type" }
                    th { "Data" } th { "Reason" }
                } }
                tbody {
                    @for f in v.events {
                        tr data-ev-id=(f.event.ev_id) {
                            td { input type="checkbox" name="id" value=(f.event.ev_id) disabled[v.csrf.is_none()]; }
                            td.n { (f.event.ev_id) }
                            td { (f.failed_time.format("%Y-%m-%d %H:%M:%S")) }
                            td.n { (f.event.ev_retry.unwrap_or(0)) }
                            td.type { (f.event.kind()) }
                            td.data { pre { (f.event.data()) } }
                            td.reason { (f.reason) }
                        }
                    }
                }
            }
            @if v.csrf.is_some() {
                p.actions {
                    button #retry type="submit" name="action" value="retry" { "Retry selected" }
                    " "
                    button #delete type="submit" name="action" value="delete" { "Delete selected" }
                }
            } @else {
                p.hint { "Retrying and deleting need a console started with --writes, and its token (log in)." }
            }
        }
        @if pages > 1 {
            nav.pages {
                @if v.page > 1 { a href=(link(v.page - 1)) { "← previous page" } " " }
                @if v.page < pages { a href=(link(v.page + 1)) { "next page →" } }
            }
        }
    }
}

/// The login form.
pub fn login(wrong: bool) -> Markup {
    html! {
        @if wrong { p #notice { "That is not the token." } }
        form #login method="post" action="/login" {
            label { "Token " input type="password" name="token" autocomplete="current-password"; }
            " "
            button type="submit" { "Log in" }
        }
    }
}

/// A message page (errors, refusals).
pub fn message(text: &str) -> Markup {
    html! { p #message { (text) } p { a href="/" { "Back to the dashboard" } } }
}
