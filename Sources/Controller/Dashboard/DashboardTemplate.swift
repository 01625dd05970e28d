/// The dashboard page, a Mustache template. Self-contained: inline CSS, no scripts, no external assets, so it works
/// on an isolated network and under a strict Content-Security-Policy.
enum DashboardTemplate {
    static let page = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta http-equiv="refresh" content="{{refreshSeconds}}">
        <title>Ferry · fleet</title>
        <style>
        :root { --fg: #1d2430; --muted: #6b7585; --line: #dde2ea; --bg: #f6f8fb; --ok: #1f8a4c; --warn: #b7791f; --bad: #c53030; --info: #2b6cb0; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
        header { padding: 16px 24px; background: #fff; border-bottom: 1px solid var(--line); display: flex; align-items: baseline; gap: 16px; }
        header h1 { margin: 0; font-size: 20px; }
        header p { margin: 0; color: var(--muted); }
        main { padding: 16px 24px; }
        h2 { font-size: 15px; margin: 24px 0 8px; }
        table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); width: 100%; }
        th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
        th { font-weight: 600; background: #eef1f6; white-space: nowrap; }
        small { display: block; color: var(--muted); font-size: 12px; }
        tr.stale td { background: #fff7e6; }
        .badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; color: #fff; background: var(--muted); }
        .badge.running, .badge.healthy { background: var(--ok); }
        .badge.deploying, .badge.waiting { background: var(--info); }
        .badge.failed, .badge.rolled-back, .badge.unhealthy { background: var(--bad); }
        .badge.stale { background: var(--warn); }
        .badge.unknown { background: var(--muted); }
        .none { color: var(--muted); }
        .empty { color: var(--muted); padding: 12px; }
        </style>
        </head>
        <body>
        <header>
        <h1>Ferry fleet</h1>
        <p>{{agentCount}} agents · {{staleCount}} stale · {{serviceCount}} services · generated {{generatedAt}}</p>
        </header>
        <main>
        <h2>Services</h2>
        {{#hasServices}}
        <table>
        <tr><th>Service</th><th>Latest version</th><th>Serial</th><th>Releases</th><th>Agents</th></tr>
        {{#services}}
        <tr><td>{{name}}</td><td>{{version}}</td><td>{{serial}}</td><td>{{releases}}</td><td>{{agents}}</td></tr>
        {{/services}}
        </table>
        {{/hasServices}}
        {{^hasServices}}<p class="empty">No service has a release or an agent yet.</p>{{/hasServices}}
        <h2>Agents</h2>
        {{#hasAgents}}
        <table>
        <tr><th>Agent</th><th>Last seen</th>{{#serviceNames}}<th>{{.}}</th>{{/serviceNames}}</tr>
        {{#agents}}
        <tr class="{{#stale}}stale{{/stale}}">
        <td>{{name}}<small>{{hostname}} · {{id}}</small><small>{{agentVersion}} {{processManager}}</small></td>
        <td>{{lastSeen}}{{#stale}} <span class="badge stale">stale</span>{{/stale}}<small>{{lastSeenAt}}</small></td>
        {{#cells}}
        <td>{{#runs}}{{#reported}}<strong>{{version}}</strong> <small>serial {{serial}}{{#target}} → {{target}}{{/target}}</small>
        <span class="badge {{phase}}">{{phase}}</span> <span class="badge {{health}}">{{health}}</span><small title="{{message}}">{{shortMessage}}</small>{{/reported}}{{^reported}}<span class="none">no report yet</span>{{/reported}}{{/runs}}{{^runs}}<span class="none">—</span>{{/runs}}</td>
        {{/cells}}
        </tr>
        {{/agents}}
        </table>
        {{/hasAgents}}
        {{^hasAgents}}<p class="empty">No agent has enrolled yet.</p>{{/hasAgents}}
        </main>
        </body>
        </html>
        """
}
