import Foundation
import Shared

/// The dashboard page, a Mustache template. Self-contained: inline CSS and one inline script (allowed by its hash in
/// the Content-Security-Policy), no fonts, images or scripts from anywhere, so it works on an isolated network.
///
/// Hooks the refresh script and the browser check rely on: `#summary` and `#dashboard` (swapped on refresh),
/// `#refresh-status[data-refresh]`, `tr[data-agent][data-stale]`, `td[data-service][data-version][data-serial]
/// [data-phase][data-health]`, `article[data-rollout-service][data-rollout-state][data-rollout-version]`,
/// `tr[data-event-kind]`.
enum DashboardTemplate {
    static let page = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <noscript><meta http-equiv="refresh" content="{{refreshSeconds}}"></noscript>
        <title>Ferry · fleet</title>
        <style>
        \(style)
        </style>
        </head>
        <body data-refresh-seconds="{{refreshSeconds}}">
        <header class="top">
        <h1>Ferry fleet</h1>
        <p id="summary">{{agents}} · {{staleCount}} stale · {{services}} · {{openRollouts}}{{#hasHalted}} · <strong class="alert">{{haltedCount}} halted</strong>{{/hasHalted}} · \
        <span data-trust-root>{{trustRoot}}</span> · \
        generated <time datetime="{{generatedAt}}">{{generatedAt}}</time></p>
        <p id="refresh-status" data-refresh="off">reloads every {{refreshSeconds}} s</p>
        </header>
        <main id="dashboard" data-generated-at="{{generatedAt}}">
        \(summarySection)
        <section id="fleet" data-matching="{{matching}}" data-offset="{{offset}}" data-returned="{{returned}}">
        <h2>Agents</h2>
        <p class="paging">{{#hasAgents}}{{first}}–{{last}} of {{matching}} agents{{/hasAgents}}{{^hasAgents}}{{#pastTheEnd}}this page is past the last of {{matching}} matching agents · <button type="button" class="filter" data-query="{{lastPageQuery}}" data-page="last">last page</button>{{/pastTheEnd}}{{^pastTheEnd}}no agent matches{{/pastTheEnd}}{{/hasAgents}}\
        {{#hasFilter}} matching <strong data-filter>{{filterText}}</strong> · <button type="button" class="filter" data-query="" data-clear-filter>all agents</button>{{/hasFilter}} \
        {{#failuresFirst}}· failures first{{/failuresFirst}}{{^failuresFirst}}· by name{{/failuresFirst}}{{#hasPrevious}} · <button type="button" class="filter" data-query="{{previousQuery}}" data-page="previous">previous</button>{{/hasPrevious}}\
        {{#hasNext}} · <button type="button" class="filter" data-query="{{nextQuery}}" data-page="next">next {{limit}}</button>{{/hasNext}}</p>
        {{#hasAgents}}
        <div class="scroll">
        <table class="matrix">
        <thead><tr><th>Agent</th><th>Last seen</th>{{#columns}}<th data-service="{{name}}">{{name}}\
        <small>{{#hasRelease}}latest {{version}} · serial {{serial}}{{/hasRelease}}{{^hasRelease}}no release{{/hasRelease}}</small></th>\
        {{/columns}}</tr></thead>
        <tbody>
        {{#rows}}
        <tr class="{{#stale}}stale{{/stale}}" data-agent="{{name}}" data-agent-id="{{id}}" \
        data-stale="{{#stale}}true{{/stale}}{{^stale}}false{{/stale}}">
        <th scope="row" title="{{id}}"><a class="agent" role="link" tabindex="0" data-open="/agents/{{path}}">{{name}}</a><small>{{hostname}}</small>\
        <small>{{agentVersion}} {{processManager}}{{#trustRootVersion}} · root {{trustRootVersion}}{{/trustRootVersion}}</small>\
        {{#trustRootProblem}}<span class="badge tone-bad" data-trust-root-problem title="{{trustRootProblem}}">{{shortTrustRootProblem}}</span>{{/trustRootProblem}}\
        {{#identityConflict}}<span class="badge tone-bad" data-identity-conflict \
        title="two running agents report as this agent: see its page">identity conflict</span>{{/identityConflict}}</th>
        <td class="seen">{{#stale}}<span class="badge stale" title="no status report for three poll intervals">stale</span> {{/stale}}\
        {{lastSeen}}<small>{{lastSeenAt}}</small></td>
        {{#cells}}
        {{#runs}}{{#reported}}<td class="cell {{phase}}" data-service="{{service}}" data-version="{{version}}" data-serial="{{serial}}" \
        data-phase="{{phase}}" data-health="{{health}}">\
        <div class="version">{{#hasVersion}}<strong>{{version}}</strong>{{/hasVersion}}{{^hasVersion}}<span class="none">no release</span>{{/hasVersion}} \
        {{#hasSerial}}<span class="serial">serial {{serial}}</span>{{/hasSerial}}{{#target}} <span class="target" title="target serial">→ {{target}}</span>{{/target}}</div>\
        <div><span class="badge {{phase}}">{{phase}}</span> <span class="badge {{health}}">{{health}}</span> \
        <span class="procs">{{processes}} proc · {{updatedAgo}}</span></div>\
        <div class="message" title="{{message}}">{{shortMessage}}</div></td>{{/reported}}\
        {{^reported}}<td class="cell" data-service="{{service}}" data-phase="none"><span class="none">no report yet</span></td>{{/reported}}{{/runs}}\
        {{^runs}}<td class="cell" data-service="{{service}}"><span class="none">—</span></td>{{/runs}}
        {{/cells}}
        </tr>
        {{/rows}}
        </tbody>
        </table>
        </div>
        {{/hasAgents}}
        {{^hasAgents}}{{#noneEnrolled}}<p class="empty">No agent has enrolled yet.</p>{{/noneEnrolled}}{{/hasAgents}}
        </section>
        {{#hasApprovals}}
        <section id="approvals">
        <h2>Awaiting approval</h2>
        <table class="events">
        <thead><tr><th>Service</th><th>Serial</th><th>Version</th><th>Published by</th><th>Signatures</th><th>Signed by (key ids)</th></tr></thead>
        <tbody>
        {{#approvals}}<tr data-approval-service="{{service}}" data-approval-serial="{{serial}}"><td>{{service}}</td><td>{{serial}}</td>\
        <td>{{version}}</td><td>{{publishedBy}}</td><td>{{signed}} of {{required}}</td><td>{{signers}}</td></tr>
        {{/approvals}}
        </tbody>
        </table>
        </section>
        {{/hasApprovals}}
        <div class="columns">
        <section id="rollouts">
        <h2>Rollouts</h2>
        {{#rollouts}}
        <article class="rollout" data-rollout-service="{{service}}" data-rollout-serial="{{serial}}" \
        data-rollout-version="{{version}}" data-rollout-state="{{state}}">
        <div class="rollout-head"><a role="link" tabindex="0" data-open="/rollouts/{{service}}/{{serial}}"><strong class="service">{{service}}</strong> \
        <span>serial {{serial}} · {{version}}</span></a> \
        <span class="badge state {{state}}">{{state}}</span> <span class="wave">wave {{wave}}/{{waveCount}}</span></div>
        <div class="bar" role="img" aria-label="{{healthy}} healthy, {{updated}} updated, {{failed}} failed, {{pending}} pending of {{agents}} agents">\
        {{#segments}}<span class="part {{kind}}" style="width: {{percent}}%" title="{{count}} {{label}}"></span>{{/segments}}</div>
        <p class="counts"><span class="key healthy"></span>{{healthy}} healthy · <span class="key updated"></span>{{updated}} updated · \
        <span class="key failed"></span>{{failed}} failed · <span class="key pending"></span>{{pending}} pending · {{agents}} agents</p>
        {{#hasReason}}<p class="reason" data-rollout-reason>{{reason}}</p>{{/hasReason}}
        <ol class="waves">{{#hasEarlierWaves}}<li class="reached more">{{earlierWaves}} earlier waves</li>{{/hasEarlierWaves}}\
        {{#waves}}<li class="{{#reached}}reached{{/reached}}"><span class="wave-name">wave {{number}}</span>\
        {{#agents}} <span class="chip {{progress}}" data-progress="{{progress}}">{{name}}</span>{{/agents}}\
        {{#hasMore}} <span class="more">and {{more}} more</span>{{/hasMore}}</li>{{/waves}}\
        {{#hasLaterWaves}}<li class="more">and {{laterWaves}} more waves</li>{{/hasLaterWaves}}</ol>
        {{#showFailures}}{{#failures}}<p class="failure"><strong>{{agent}}</strong> {{kind}}: {{reason}}</p>{{/failures}}{{/showFailures}}
        <p class="meta">{{strategy}} · stable serial {{stableSerial}}{{#staged}} · waves stable after {{waveStableSeconds}} s · \
        max failures {{maxFailures}}{{/staged}} · changed <span title="{{updatedAt}}">{{updatedAgo}}</span></p>
        </article>
        {{/rollouts}}
        {{^hasRollouts}}<p class="empty">No rollout yet.</p>{{/hasRollouts}}
        </section>
        <section id="events">
        <h2>Last events</h2>
        {{#hasEvents}}
        <table class="events">
        <thead><tr><th>Time (UTC)</th><th>Service</th><th>Event</th><th>Message</th></tr></thead>
        <tbody>
        {{#events}}
        <tr data-event-kind="{{kind}}" data-event-service="{{service}}">\
        <td title="{{at}}">{{time}}<small>{{ago}}</small></td>\
        <td>{{service}}{{#hasSerial}}<small>serial {{serial}}</small>{{/hasSerial}}</td>\
        <td><span class="badge tone-{{tone}}">{{kind}}</span></td>\
        <td class="message">{{message}}{{#hasAgent}}<small>agent {{agent}}</small>{{/hasAgent}}</td></tr>
        {{/events}}
        </tbody>
        </table>
        {{/hasEvents}}
        {{^hasEvents}}<p class="empty">No event yet.</p>{{/hasEvents}}
        </section>
        </div>
        </main>
        <script>\(script)</script>
        </body>
        </html>
        """

    /// The fleet summary: per service, agents by version and phase, failing versions first; every count is a button
    /// that lists the agents it counts (`data-query`, followed by the page's script: the page has no `href` at all).
    /// Its own section, so detail views can change around it.
    ///
    /// Hooks for the browser check: `article[data-summary-service][data-agents][data-failing][data-stale]`,
    /// `td[data-version][data-phase][data-count]`.
    static let summarySection = """
        <section id="fleet-summary">
        <h2>Fleet summary</h2>
        {{#summaryServices}}
        <article class="service-summary" data-summary-service="{{name}}" data-agents="{{agents}}" data-failing="{{failing}}" \
        data-unhealthy="{{unhealthy}}" data-stale="{{stale}}" data-unreported="{{unreported}}">
        <div class="summary-head"><strong class="service">{{name}}</strong> <button type="button" class="filter" data-query="{{allQuery}}">{{agents}} agents</button>\
        {{#hasFailing}} · <button type="button" class="filter alert" data-query="{{failingQuery}}">{{failing}} failing</button>{{/hasFailing}}\
        {{#hasUnhealthy}} · <button type="button" class="filter alert" data-query="{{unhealthyQuery}}">{{unhealthy}} unhealthy</button>{{/hasUnhealthy}}\
        {{#hasStale}} · <button type="button" class="filter warn" data-query="{{staleQuery}}">{{stale}} stale</button>{{/hasStale}}\
        {{#hasUnreported}} · {{unreported}} not reported{{/hasUnreported}}</div>
        <table class="summary">
        <thead><tr><th>Version</th>{{#phaseNames}}<th>{{.}}</th>{{/phaseNames}}<th>Total</th></tr></thead>
        <tbody>
        {{#versions}}
        <tr class="{{#hasFailing}}failing{{/hasFailing}}" data-version="{{version}}" data-serial="{{serial}}">\
        <th>{{#hasVersion}}{{version}} <small>serial {{serial}}</small>{{/hasVersion}}{{^hasVersion}}<span class="none">no release installed</span>{{/hasVersion}}</th>\
        {{#cells}}<td class="count {{phase}}" data-version="{{version}}" data-phase="{{phase}}" data-count="{{count}}">\
        {{#hasCount}}<button type="button" class="filter" data-query="{{query}}">{{count}}</button>{{/hasCount}}{{^hasCount}}<span class="none">·</span>{{/hasCount}}</td>{{/cells}}\
        <td class="count total" data-count="{{agents}}">{{agents}}</td></tr>
        {{/versions}}
        </tbody>
        </table>
        </article>
        {{/summaryServices}}
        {{^summaryServices}}<p class="empty">No service has agents yet.</p>{{/summaryServices}}
        </section>
        """

    /// Sized for a 1366×768 laptop screen: the matrix uses the full width, rollouts and events share the row below.
    static let style = """
        :root { --fg: #1b2330; --muted: #687385; --line: #dfe3ea; --bg: #f4f6f9; --card: #fff;
          --ok: #1d7f46; --ok-bg: #e2f3e8; --info: #2463a8; --info-bg: #e3edf9; --warn: #9a6210; --warn-bg: #fdf0d9;
          --bad: #b42828; --bad-bg: #fbe3e3; --mute-bg: #eceff3; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
          color: var(--fg); background: var(--bg); }
        header.top { padding: 10px 20px; background: #1b2330; color: #fff; display: flex; align-items: baseline; gap: 18px;
          flex-wrap: wrap; }
        header.top h1 { margin: 0; font-size: 18px; }
        header.top p { margin: 0; color: #c8d0dc; }
        header.top .alert { color: #ffb4b4; }
        #refresh-status { margin-left: auto; font-size: 12px; }
        #refresh-status[data-refresh="failed"] { color: #ffb4b4; }
        main { padding: 4px 20px 20px; }
        h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 14px 0 6px; }
        small { display: block; color: var(--muted); font-size: 12px; font-weight: normal; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); width: 100%; }
        th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
        thead th { font-weight: 600; background: #e9edf3; white-space: nowrap; font-size: 13px; }
        tbody th { font-weight: 600; white-space: nowrap; }
        .agent { font-size: 14px; }
        [data-open] { color: inherit; text-decoration: none; cursor: pointer; } [data-open]:hover, [data-open]:focus { text-decoration: underline; }
        .seen { white-space: nowrap; }
        tr.stale > th, tr.stale > td { background: #fff4dc; }
        tr.stale > th { box-shadow: inset 4px 0 0 var(--warn); }
        .cell { min-width: 190px; border-left: 1px solid var(--line); }
        .cell.running { box-shadow: inset 3px 0 0 var(--ok); }
        .cell.deploying, .cell.waiting { box-shadow: inset 3px 0 0 var(--info); }
        .cell.failed, .cell.rolled-back { box-shadow: inset 3px 0 0 var(--bad); background: #fff6f6; }
        .version strong { font-size: 15px; }
        .serial, .target, .procs { color: var(--muted); font-size: 12px; }
        .target { color: var(--bad); font-weight: 600; }
        .message { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
        .cell .message { max-width: 340px; }
        .badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; line-height: 18px; font-weight: 600;
          background: var(--mute-bg); color: var(--muted); white-space: nowrap; }
        .badge.running, .badge.healthy, .badge.tone-ok { background: var(--ok-bg); color: var(--ok); }
        .badge.deploying, .badge.waiting, .badge.tone-info { background: var(--info-bg); color: var(--info); }
        .badge.failed, .badge.rolled-back, .badge.unhealthy, .badge.tone-bad { background: var(--bad-bg); color: var(--bad); }
        .badge.tone-warn { background: var(--warn-bg); color: var(--warn); }
        .badge.stale { background: var(--warn); color: #fff; text-transform: uppercase; letter-spacing: .04em; }
        .badge.state { color: #fff; text-transform: uppercase; letter-spacing: .04em; }
        .badge.state.rolling { background: var(--info); }
        .badge.state.paused { background: var(--warn); }
        .badge.state.halted, .badge.state.aborted { background: var(--bad); }
        .badge.state.completed { background: var(--ok); }
        .badge.state.superseded { background: var(--muted); }
        .none, .empty { color: var(--muted); }
        .columns { display: grid; grid-template-columns: minmax(0, 5fr) minmax(0, 6fr); gap: 20px; }
        @media (max-width: 1000px) { .columns { grid-template-columns: minmax(0, 1fr); } }
        .rollout { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin-bottom: 10px; }
        .rollout[data-rollout-state="halted"], .rollout[data-rollout-state="aborted"] { border-color: var(--bad);
          box-shadow: inset 4px 0 0 var(--bad); }
        .rollout[data-rollout-state="paused"] { box-shadow: inset 4px 0 0 var(--warn); }
        .rollout[data-rollout-state="rolling"] { box-shadow: inset 4px 0 0 var(--info); }
        .rollout-head { display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; }
        .rollout-head .service { font-size: 15px; }
        .rollout-head .wave { margin-left: auto; color: var(--muted); font-weight: 600; }
        .bar { display: flex; height: 12px; border-radius: 6px; overflow: hidden; background: var(--mute-bg); margin: 8px 0 4px; }
        .part.healthy, .key.healthy { background: var(--ok); }
        .part.updated, .key.updated { background: #5b9bdc; }
        .part.failed, .key.failed { background: var(--bad); }
        .part.pending, .key.pending { background: #c5ccd6; }
        .key { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 4px; }
        .counts, .meta { margin: 2px 0; font-size: 12px; color: var(--muted); }
        p.conflict { margin: 8px 0; padding: 8px 12px; border-left: 4px solid var(--bad); background: var(--bad-bg); color: #5a1010; }
        .reason { margin: 6px 0; padding: 6px 8px; background: var(--bad-bg); color: #7d1616; border-radius: 4px; font-size: 13px;
          overflow-wrap: anywhere; }
        .failure { margin: 3px 0; font-size: 12px; overflow-wrap: anywhere; }
        .waves { list-style: none; margin: 6px 0; padding: 0; font-size: 12px; }
        .waves li { margin: 2px 0; color: var(--muted); }
        .waves li.reached .wave-name { color: var(--fg); font-weight: 600; }
        .wave-name { display: inline-block; min-width: 52px; }
        .chip { display: inline-block; padding: 0 6px; border-radius: 4px; border: 1px solid var(--line); background: #f8f9fb;
          color: var(--fg); }
        .chip.healthy { border-color: var(--ok); background: var(--ok-bg); }
        .chip.updated { border-color: var(--info); background: var(--info-bg); }
        .chip.failed { border-color: var(--bad); background: var(--bad-bg); color: var(--bad); font-weight: 600; }
        .paging { margin: 0 0 6px; font-size: 13px; color: var(--muted); }
        .service-summary { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px;
          margin-bottom: 10px; }
        .service-summary[data-failing]:not([data-failing="0"]) { box-shadow: inset 4px 0 0 var(--bad); }
        .summary-head { margin-bottom: 6px; }
        .summary-head .service { font-size: 15px; }
        table.summary { width: auto; min-width: 60%; }
        table.summary td.count { text-align: right; font-variant-numeric: tabular-nums; min-width: 70px; }
        table.summary tr.failing th { box-shadow: inset 3px 0 0 var(--bad); }
        button.filter { font: inherit; color: var(--info); background: none; border: 0; padding: 0; cursor: pointer;
          text-decoration: underline; }
        button.filter.alert, td.count.failed button, td.count.rolled-back button { color: var(--bad); font-weight: 600; }
        button.filter.warn { color: var(--warn); font-weight: 600; }
        td.count.total { font-weight: 600; }
        .more { color: var(--muted); }
        .events td { font-size: 13px; }
        .events td:first-child { white-space: nowrap; font-variant-numeric: tabular-nums; }
        .events tr[data-event-kind="halted"] td, .events tr[data-event-kind="rolled-back"] td,
        .events tr[data-event-kind="refused"] td { background: #fff8f8; }
        """

    /// Reloads the page's data every `data-refresh-seconds`: fetches the page again (with its filters) and swaps `#summary` and `#dashboard`,
    /// so the page is rendered (and escaped) in one place only. Parsed with `DOMParser`, whose documents run no
    /// scripts. `location.origin` has no `user:password@` (which `fetch` refuses); the browser sends the Basic
    /// credentials it already holds for this origin. Backs off after failures and says so in `#refresh-status`. A click
    /// on an element with `data-query` (the summary's counts, paging) loads the page with that query.
    /// Must not contain two opening braces in a row (the page is a Mustache template).
    static let script = """
        (function () {
          'use strict';
          var seconds = parseInt(document.body.getAttribute('data-refresh-seconds'), 10) || 15;
          var status = document.getElementById('refresh-status');
          var failures = 0;
          function show(state, text) {
            status.setAttribute('data-refresh', state);
            status.textContent = text;
          }
          function swap(doc, id) {
            var next = doc.getElementById(id);
            var current = document.getElementById(id);
            if (!next || !current) throw new Error('the page has no #' + id);
            current.replaceWith(document.adoptNode(next));
          }
          function refresh() {
            var options = { credentials: 'same-origin', cache: 'no-store', headers: { 'Accept': 'text/html' } };
            fetch(location.origin + location.pathname + location.search, options)
              .then(function (response) {
                if (!response.ok) throw new Error('HTTP ' + response.status);
                return response.text();
              })
              .then(function (html) {
                var doc = new DOMParser().parseFromString(html, 'text/html');
                swap(doc, 'summary');
                swap(doc, 'dashboard');
                failures = 0;
                show('ok', 'live · updated ' + new Date().toLocaleTimeString() + ' · every ' + seconds + ' s');
              })
              .catch(function (error) {
                failures += 1;
                show('failed', 'refresh failed (' + error.message + ') · showing older data · retrying');
              })
              .then(function () {
                setTimeout(refresh, seconds * 1000 * Math.min(failures + 1, 4));
              });
          }
          // Detail views open on a click (or Enter) on an element naming its same-origin path in data-open: no href,
          // so the page keeps referring to nothing, not even the controller's other pages.
          function open(event) {
            var target = event.target && event.target.closest ? event.target.closest('[data-open]') : null;
            if (!target || (event.type === 'keydown' && event.key !== 'Enter')) return;
            var path = target.getAttribute('data-open') || '';
            if (path.charAt(0) !== '/' || path.charAt(1) === '/' || path.charAt(1) === '\\\\') return;
            location.assign(path);
          }
          document.addEventListener('click', open);
          document.addEventListener('keydown', open);
          document.addEventListener('click', function (event) {
            var target = event.target.closest ? event.target.closest('[data-query]') : null;
            if (!target) return;
            var query = target.getAttribute('data-query');
            location.search = query ? '?' + query : '';
          });
          show('waiting', 'live · every ' + seconds + ' s');
          setTimeout(refresh, seconds * 1000);
        })();
        """

    /// `'sha256-<base64>'` of `script`, for the Content-Security-Policy.
    static let scriptHash = "sha256-" + Data(SHA256.hash(Array(script.utf8)).bytes).base64EncodedString()
}
