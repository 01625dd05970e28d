/// The dashboard's detail pages — one agent (`GET /agents/{name}`), one rollout (`GET /rollouts/{service}/{serial}`) —
/// as Mustache templates. They share the fleet page's style and its refresh script (same hash, so the same
/// Content-Security-Policy): the script fetches the page's own path again and swaps `#summary` and `#dashboard`.
///
/// Hooks for the browser check and scripts: `article[data-detail="agent"][data-agent]`,
/// `article[data-detail="rollout"][data-rollout-service][data-rollout-serial][data-rollout-state]`,
/// `section[data-service-detail][data-phase][data-health]`, `tr[data-process][data-pid]`,
/// `div[data-failure-serial][data-failure-kind]`, `dl[data-diagnosis-stage][data-diagnosis-cause]`,
/// `tr[data-instance][data-exit-code][data-signal]`, `pre[data-log-app][data-log-stream]`, `tr[data-rollout-agent]
/// [data-progress]`, `tr[data-report-at]`.
enum DetailPageTemplate {
    /// The evidence of one failure (a `failure` context: serial, kind, reason, optional diagnosis).
    static let failure = """
        <div class="failure-detail" data-failure-serial="{{serial}}" data-failure-kind="{{kind}}">
        <p class="reason"><strong>serial {{serial}} {{kind}}</strong>: {{reason}}</p>
        {{#diagnosis}}
        <dl class="diagnosis" data-diagnosis-stage="{{stage}}" data-diagnosis-cause="{{cause}}">
        <dt>stage</dt><dd>{{stage}}</dd><dt>cause</dt><dd>{{cause}}</dd><dt>seen</dt><dd>{{at}}</dd>\
        {{#hasDeadline}}<dt>deadline</dt><dd>{{deadlineSeconds}} s</dd>{{/hasDeadline}}\
        {{#hasProbe}}{{#probe}}<dt>health URL</dt><dd><code>{{url}}</code>{{#hasStatus}} answered HTTP {{status}}{{/hasStatus}}\
        {{#hasError}} did not answer: {{error}}{{/hasError}}{{#hasBody}}<pre class="body">{{body}}</pre>{{/hasBody}}</dd>{{/probe}}{{/hasProbe}}
        </dl>
        {{#hasInstances}}
        <table class="instances"><thead><tr><th>App</th><th>pm_id</th><th>Status</th><th>Restarts</th><th>Exit code</th>\
        <th>Signal</th></tr></thead><tbody>
        {{#instances}}<tr data-instance="{{app}}" data-pm-id="{{pmId}}" data-exit-code="{{exitCode}}" data-signal="{{signal}}">\
        <td>{{app}}</td><td>{{pmId}}</td><td><span class="badge {{status}}">{{status}}</span></td><td>{{restarts}}</td>\
        <td>{{exitCode}}</td><td>{{signal}}</td></tr>{{/instances}}
        </tbody></table>
        {{/hasInstances}}
        {{#logs}}
        <h3 class="log-head">{{stream}} of {{app}} (pm_id {{pmIds}}){{#truncated}} · last {{lineCount}} lines{{/truncated}}</h3>
        <pre class="log {{stream}}" data-log-app="{{app}}" data-log-stream="{{stream}}">{{text}}</pre>
        {{/logs}}
        {{^hasLogs}}<p class="empty">No log lines were read for this failure.</p>{{/hasLogs}}
        {{/diagnosis}}
        </div>
        """

    static let agent = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <noscript><meta http-equiv="refresh" content="{{refreshSeconds}}"></noscript>
        <title>Ferry · agent {{name}}</title>
        <style>
        \(DashboardTemplate.style)
        \(style)
        </style>
        </head>
        <body data-refresh-seconds="{{refreshSeconds}}">
        <header class="top">
        <h1><a role="link" tabindex="0" data-open="/">Ferry fleet</a> · agent {{name}}</h1>
        <p id="summary">{{hostname}} · {{agentVersion}} {{processManager}} · last seen {{lastSeen}}\
        {{#stale}} · <strong class="alert">stale</strong>{{/stale}} · generated <time datetime="{{generatedAt}}">{{generatedAt}}</time></p>
        <p id="refresh-status" data-refresh="off">reloads every {{refreshSeconds}} s</p>
        </header>
        <main id="dashboard" data-generated-at="{{generatedAt}}">
        <article data-detail="agent" data-agent="{{name}}" data-agent-id="{{id}}" data-stale="{{#stale}}true{{/stale}}{{^stale}}false{{/stale}}">
        <p class="meta">id {{id}} · enrolled {{enrolledAt}}{{#instanceId}} on <span id="instance" title="proved by its signed EC2 instance identity document">instance {{instanceId}} (attested)</span>{{/instanceId}} · last report {{lastSeenAt}}</p>
        {{#identityConflict}}
        <p class="conflict" id="identity-conflict" data-hostnames="{{hostnames}}"><strong>Two running agents report as this agent</strong>,         from {{hostnames}} in turn (noticed <span title="{{noticedAt}}">{{noticedAgo}}</span>): a machine image baked         after the agent enrolled, a copied state directory or a stolen token. Their reports overwrite each other. Remove         this agent (<code>ferry-controller agents remove</code>, which revokes the shared token) and enroll each instance         afresh.</p>
        {{/identityConflict}}
        {{#services}}
        <section class="service-detail {{phase}}" data-service-detail="{{service}}" data-phase="{{phase}}" data-health="{{health}}">
        <h2>{{service}}</h2>
        {{#reported}}
        <p><strong>{{version}}</strong> <span class="serial">serial {{serial}}</span>{{#target}} <span class="target">→ {{target}}</span>{{/target}} \
        <span class="badge {{phase}}">{{phase}}</span> <span class="badge {{health}}">{{health}}</span> \
        <span class="procs">reported <span title="{{updatedAt}}">{{updatedAgo}}</span></span></p>
        <p class="message">{{message}}</p>
        {{#hasProcesses}}
        <table class="processes"><thead><tr><th>App</th><th>pm_id</th><th>pid</th><th>Status</th><th>Restarts</th><th>Uptime</th>\
        <th>Memory</th><th>CPU</th></tr></thead><tbody>
        {{#processes}}<tr data-process="{{name}}" data-pm-id="{{pmId}}" data-pid="{{pid}}"><td>{{name}}</td><td>{{pmId}}</td><td>{{pid}}</td>\
        <td><span class="badge {{status}}">{{status}}</span></td><td>{{restarts}}</td><td>{{uptime}}</td><td>{{memory}}</td><td>{{cpu}}</td></tr>{{/processes}}
        </tbody></table>
        {{/hasProcesses}}
        {{^hasProcesses}}<p class="empty">No process of this service runs.</p>{{/hasProcesses}}
        {{#failure}}\(failure){{/failure}}
        {{#hasOlderFailures}}<p class="meta">earlier failures: {{#olderFailures}}<span class="chip failed" title="{{reason}}">serial {{serial}} \
        {{kind}}</span> {{/olderFailures}}</p>{{/hasOlderFailures}}
        {{/reported}}
        {{^reported}}<p class="empty">No status report for this service yet.</p>{{/reported}}
        </section>
        {{/services}}
        <section id="reports">
        <h2>Last reports</h2>
        {{#hasReports}}
        <table class="reports"><thead><tr><th>Received (UTC)</th><th>Service</th><th>Serial</th><th>Phase</th><th>Health</th>\
        <th>Message</th></tr></thead><tbody>
        {{#reports}}{{#services}}<tr data-report-at="{{receivedAt}}"><td title="{{receivedAt}}">{{time}}<small>{{ago}}</small></td>\
        <td>{{service}}</td><td>{{serial}}</td><td><span class="badge {{phase}}">{{phase}}</span></td>\
        <td><span class="badge {{health}}">{{health}}</span></td><td class="message">{{message}}</td></tr>{{/services}}{{/reports}}
        </tbody></table>
        {{/hasReports}}
        {{^hasReports}}<p class="empty">No status report yet.</p>{{/hasReports}}
        </section>
        </article>
        </main>
        <script>\(DashboardTemplate.script)</script>
        </body>
        </html>
        """

    static let rollout = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <noscript><meta http-equiv="refresh" content="{{refreshSeconds}}"></noscript>
        <title>Ferry · rollout {{service}} serial {{serial}}</title>
        <style>
        \(DashboardTemplate.style)
        \(style)
        </style>
        </head>
        <body data-refresh-seconds="{{refreshSeconds}}">
        <header class="top">
        <h1><a role="link" tabindex="0" data-open="/">Ferry fleet</a> · rollout {{service}} serial {{serial}}</h1>
        <p id="summary">{{version}} · {{state}} · wave {{wave}}/{{waveCount}} · {{healthy}} healthy, {{failed}} failed, {{pending}} pending of \
        {{agents}} · generated <time datetime="{{generatedAt}}">{{generatedAt}}</time></p>
        <p id="refresh-status" data-refresh="off">reloads every {{refreshSeconds}} s</p>
        </header>
        <main id="dashboard" data-generated-at="{{generatedAt}}">
        <article data-detail="rollout" data-rollout-service="{{service}}" data-rollout-serial="{{serial}}" data-rollout-version="{{version}}" \
        data-rollout-state="{{state}}">
        <p><span class="badge state {{state}}">{{state}}</span> <span class="meta">{{strategy}} · stable serial {{stableSerial}} · \
        waves stable after {{waveStableSeconds}} s · max failures {{maxFailures}} · created {{createdAt}} · changed {{updatedAt}}</span></p>
        {{#hasReason}}<p class="reason" data-rollout-reason>{{reason}}</p>{{/hasReason}}
        <section id="rollout-agents">
        <h2>Agents</h2>
        {{#hasAgents}}
        <table class="rollout-agents"><thead><tr><th>Agent</th><th>Wave</th><th>Progress</th><th>Serial</th><th>Phase</th><th>Health</th>\
        <th>Message</th></tr></thead><tbody>
        {{#agentRows}}<tr data-rollout-agent="{{name}}" data-progress="{{progress}}"><td><a role="link" tabindex="0" data-open="/agents/{{path}}">{{name}}</a></td>\
        <td>{{wave}}{{^reached}} <small>not reached</small>{{/reached}}</td><td><span class="chip {{progress}}">{{progress}}</span></td>\
        <td>{{serial}}</td><td>{{#phase}}<span class="badge {{phase}}">{{phase}}</span>{{/phase}}</td>\
        <td>{{#health}}<span class="badge {{health}}">{{health}}</span>{{/health}}</td><td class="message">{{message}}</td></tr>{{/agentRows}}
        </tbody></table>
        {{#hasUnlistedAgents}}<p class="more" data-unlisted-agents="{{unlistedAgents}}">and {{unlistedAgents}} more agents \
        (counted above; <code>GET /v1/rollouts/{{service}}/{{serial}}</code> lists every agent)</p>{{/hasUnlistedAgents}}
        {{/hasAgents}}
        {{^hasAgents}}<p class="empty">This rollout has no agents.</p>{{/hasAgents}}
        </section>
        {{#hasFailures}}
        <section id="rollout-failures">
        <h2>Failures</h2>
        {{#failures}}<section class="agent-failure" data-failed-agent="{{name}}"><h3><a role="link" tabindex="0" data-open="/agents/{{path}}">{{name}}</a></h3>\
        {{#failure}}\(failure){{/failure}}{{^failure}}<p class="reason">{{kind}}: {{reason}}</p>{{/failure}}</section>{{/failures}}
        {{#hasUnlistedFailures}}<p class="more" data-unlisted-failures="{{unlistedFailures}}">and {{unlistedFailures}} more failed \
        agents: each one's page shows its failure (<code>GET /v1/rollouts/{{service}}/{{serial}}</code> lists every agent of \
        the rollout with its progress)</p>{{/hasUnlistedFailures}}
        </section>
        {{/hasFailures}}
        </article>
        </main>
        <script>\(DashboardTemplate.script)</script>
        </body>
        </html>
        """

    /// What the detail pages add to the fleet page's style.
    static let style = """
        header.top h1 a { color: #fff; text-decoration: none; }
        header.top h1 a:hover { text-decoration: underline; }
        a { color: var(--info); }
        .service-detail { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 10px 0; }
        .service-detail.failed, .service-detail.rolled-back { box-shadow: inset 4px 0 0 var(--bad); }
        .service-detail.running { box-shadow: inset 4px 0 0 var(--ok); }
        .service-detail h2 { margin-top: 4px; }
        .failure-detail { margin: 10px 0; }
        .diagnosis { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 6px 0; font-size: 13px; }
        .diagnosis dt { color: var(--muted); }
        .diagnosis dd { margin: 0; overflow-wrap: anywhere; }
        .log-head { font-size: 12px; color: var(--muted); margin: 10px 0 2px; font-weight: 600; }
        pre.log, pre.body { background: #111820; color: #e6edf3; padding: 8px 10px; border-radius: 4px; font-size: 12px; line-height: 1.35;
          white-space: pre-wrap; overflow-wrap: anywhere; max-height: 420px; overflow: auto; margin: 0; }
        pre.log.stderr { border-left: 4px solid var(--bad); }
        table.instances, table.processes, table.reports, table.rollout-agents { margin: 6px 0; font-size: 13px; }
        .agent-failure h3 { font-size: 14px; margin: 12px 0 4px; }
        """
}
