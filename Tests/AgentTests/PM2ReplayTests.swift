import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Drives the PM2 adapter through the recorded sequences `symlink-01…12` and `path-01…11` of real PM2 7.0.3, with the
/// stand-in `pm2` answering every call with the captured stdout, stderr and exit code (Fixtures/pm2/pm2-standin).
///
/// Each pass is what the agent does: read the table, decide per app (`AppAction`), act, read the table after every
/// action, `pm2 save` after a change, and judge the final table (`ProcessTableCheck`). The test asserts that the
/// decisions are the ones the captures show are needed, that the exact commands sent are those decisions, and what
/// the captures' probes observed about the code that ran.
///
/// Where the adapter's command differs from the recorded one, the answer still comes from the capture that recorded
/// that behaviour, and the step says why: the adapter reloads one app per call through the ecosystem file
/// (`pm2 reload <file> --only <app> --update-env`, PM2's `startOrReload` path, recorded as `symlink-07`), where the
/// recording sometimes used `pm2 reload <name>` or `pm2 restart <names…>`.
@Suite("PM2 adapter replays recorded PM2 7.0.3 behaviour")
struct PM2ReplayTests {
    /// One agent pass against the stand-in.
    struct Pass {
        var decisions: [String: AppAction] = [:]
        /// Every call except `jlist`, in order.
        var commands: [[String]] = []
        /// Whether every changing command was followed by a `jlist` before the next one.
        var readAfterEachAction = true
        var table: [ManagedProcess] = []
        var check: ProcessTableCheck = .allOnline
    }

    /// The agent's loop for one service, reduced to its PM2 part.
    static func pass(
        _ desired: [AppSpec],
        needsRefresh: Bool,
        answers: [PM2StandIn.Answer],
        standIn: PM2StandIn,
        manager: PM2ProcessManager
    ) async throws -> Pass {
        try Data(EcosystemWriter.render(apps: desired, namespace: manager.configuration.namespace))
            .write(to: URL(fileURLWithPath: standIn.ecosystem))
        try standIn.queue(answers)
        let callsBefore = try standIn.invocations().count
        var outcome = Pass()
        let observed = try await manager.processes()
        var names = desired.map(\.name)
        for process in observed where !names.contains(process.name) { names.append(process.name) }
        var table = observed
        for name in names {
            let spec = desired.first { $0.name == name }
            let action = AppAction.decide(desired: spec, observed: observed.filter { $0.name == name }, needsRefresh: needsRefresh)
            outcome.decisions[name] = action
            table = try await action.perform(on: manager, appNamed: name, desired: spec, ecosystem: standIn.ecosystem)
        }
        if outcome.decisions.values.contains(where: \.changesTable) {
            try await manager.save()
            table = try await manager.processes()
        }
        let calls = try standIn.invocations().dropFirst(callsBefore)
        outcome.commands = calls.map(\.argv).filter { $0 != ["jlist"] }
        var previousWasAction = false
        for call in calls {
            if call.argv == ["jlist"] {
                previousWasAction = false
            } else {
                if previousWasAction { outcome.readAfterEachAction = false }
                previousWasAction = call.argv != ["save", "--force"]
            }
            #expect(call.env == manager.invocation.environment)
        }
        if previousWasAction { outcome.readAfterEachAction = false }
        #expect(try standIn.unusedAnswers() == 0, "the adapter did not send a command the captures expected")
        outcome.table = table
        // The recorded pids are processes of the recording machine: liveness is as recorded.
        outcome.check = ProcessTableCheck(evaluating: table, against: desired) { _ in nil }
        return outcome
    }

    // MARK: - symlink-01…12

    static let current = "$PM2_PEER/deploy/current"
    static let symFork = AppSpec.pm2TestApp("sym-fork", script: current + "/server.js", cwd: current, env: ["PORT": "18405"])
    static let symCluster = AppSpec.pm2TestApp(
        "sym-cluster",
        script: current + "/server.js",
        cwd: current,
        mode: .cluster,
        instances: 2,
        env: ["PORT": "18406"]
    )

    @Test("replays recorded PM2 behaviour symlink-01…12: reload after current is repointed, exit 0 + errored = failed deploy")
    func replaysSymlinkSequence() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        let manager = try standIn.manager(namespace: "default")
        let apps = [Self.symFork, Self.symCluster]
        let eco = standIn.ecosystem
        func reload(_ app: String) -> [String] { ["reload", eco, "--only", app, "--update-env"] }
        let save = PM2StandIn.Answer(["save", "--force"], "save.json")
        // The very first jlist of a fresh daemon prints its spawn lines before the JSON.
        try standIn.setTable(fromCapture: "jlist-daemon-not-running.json")

        // symlink-01: current -> releases/v1, nothing runs: start each app from the file.
        var pass = try await Self.pass(
            apps,
            needsRefresh: true,
            answers: [
                .init(["start", eco, "--only", "sym-fork"], "symlink-01-start.json", effect: "summary_after", apps: ["sym-fork"]),
                .init(["start", eco, "--only", "sym-cluster"], "symlink-01-start.json", effect: "summary_after", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["sym-fork": .start, "sym-cluster": .start])
        #expect(pass.commands == [["start", eco, "--only", "sym-fork"], ["start", eco, "--only", "sym-cluster"], ["save", "--force"]])
        #expect(pass.readAfterEachAction)
        #expect(pass.check == .allOnline)
        #expect(try PM2Fixtures.capture("symlink-01-start.json").codeVersions("probe_fork") == ["v1"])

        // symlink-02: the full jlist; PM2 stored the unresolved `current` path. Nothing to do.
        try standIn.setTable(fromCapture: "symlink-02-jlist.json")
        pass = try await Self.pass(apps, needsRefresh: false, answers: [], standIn: standIn, manager: manager)
        #expect(pass.decisions == ["sym-fork": AppAction.none, "sym-cluster": AppAction.none])
        #expect(pass.commands.isEmpty)
        #expect(pass.table.allSatisfy { $0.cwd == Self.current && $0.interpreter == "node" })
        #expect(pass.check == .allOnline)

        // symlink-03/04: current -> releases/v2, same paths: a reload per app runs v2 (recorded as `pm2 reload <name>`).
        pass = try await Self.pass(
            apps,
            needsRefresh: true,
            answers: [
                .init(reload("sym-fork"), "symlink-04-reload-fork-after-repoint.json", effect: "summary_after", apps: ["sym-fork"]),
                .init(reload("sym-cluster"), "symlink-03-reload-cluster-after-repoint.json", effect: "summary_after", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["sym-fork": .reload, "sym-cluster": .reload])
        #expect(pass.commands == [reload("sym-fork"), reload("sym-cluster"), ["save", "--force"]])
        #expect(pass.readAfterEachAction)
        #expect(pass.check == .allOnline)
        #expect(pass.table.map(\.restarts) == [1, 1, 1])
        #expect(try PM2Fixtures.capture("symlink-03-reload-cluster-after-repoint.json").codeVersions("probe_cluster") == ["v2", "v2"])
        #expect(try PM2Fixtures.capture("symlink-04-reload-fork-after-repoint.json").codeVersions("probe_fork") == ["v2"])

        // symlink-05: jlist after the reloads still names `current`: a reload is still all a new release needs.
        try standIn.setTable(fromCapture: "symlink-05-jlist-after-reload.json")
        pass = try await Self.pass(apps, needsRefresh: false, answers: [], standIn: standIn, manager: manager)
        #expect(pass.commands.isEmpty)
        #expect(AppAction.decide(desired: Self.symFork, observed: pass.table.filter { $0.name == "sym-fork" }, needsRefresh: true) == .reload)

        // symlink-06: back to v1 (a rollback is a new release): reload again. Recorded as `pm2 restart sym-fork
        // sym-cluster`, which re-spawned both through the repointed symlink, as a reload does.
        pass = try await Self.pass(
            apps,
            needsRefresh: true,
            answers: [
                .init(reload("sym-fork"), "symlink-06-restart-after-repoint-back.json", effect: "summary_after", apps: ["sym-fork"]),
                .init(reload("sym-cluster"), "symlink-06-restart-after-repoint-back.json", effect: "summary_after", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["sym-fork": .reload, "sym-cluster": .reload])
        #expect(pass.check == .allOnline)
        #expect(try PM2Fixtures.capture("symlink-06-restart-after-repoint-back.json").codeVersions("probe_fork") == ["v1"])

        // symlink-07: v2 again through the file, which is exactly the adapter's reload path (startOrReload --update-env).
        pass = try await Self.pass(
            apps,
            needsRefresh: true,
            answers: [
                .init(reload("sym-fork"), "symlink-07-startOrReload-after-repoint.json", effect: "summary_after", apps: ["sym-fork"]),
                .init(reload("sym-cluster"), "symlink-07-startOrReload-after-repoint.json", effect: "summary_after", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.check == .allOnline)
        #expect(pass.table.map(\.restarts) == [3, 3, 3])
        #expect(try PM2Fixtures.capture("symlink-07-startOrReload-after-repoint.json").codeVersions("probe_cluster") == ["v2", "v2"])

        // symlink-08/09: current -> releases/v3-broken. Both reloads exit 0, yet the table ends errored: failed deploy.
        pass = try await Self.pass(
            apps,
            needsRefresh: true,
            answers: [
                .init(reload("sym-fork"), "symlink-09-reload-fork-broken-release.json", effect: "timeline", apps: ["sym-fork"]),
                .init(reload("sym-cluster"), "symlink-08-reload-cluster-broken-release.json", effect: "timeline", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["sym-fork": .reload, "sym-cluster": .reload])
        #expect(pass.commands == [reload("sym-fork"), reload("sym-cluster"), ["save", "--force"]], "both reloads returned success")
        #expect(try PM2Fixtures.capture("symlink-08-reload-cluster-broken-release.json").exit_code == 0)
        #expect(try PM2Fixtures.capture("symlink-09-reload-fork-broken-release.json").exit_code == 0)
        guard case .failed(let reason) = pass.check else {
            Issue.record("a reload that exited 0 while the table says errored must be a failed deploy, got \(pass.check)")
            return
        }
        #expect(reason.contains("sym-fork: pm_id 0 errored (19 restarts, last exit code 1)"))
        // The cluster workers' recorded exit code is 0 (symlink-08 timeline, symlink-10): errored is what counts.
        #expect(reason.contains("sym-cluster: pm_id 1 errored (19 restarts, last exit code 0), pm_id 2 errored (19 restarts, last exit code 0)"))

        // symlink-10: the recorded table agrees: all errored, 19 restarts. Left alone it would be restarted…
        try standIn.setTable(fromCapture: "symlink-10-jlist-broken.json")
        let broken = try await manager.processes()
        #expect(broken.map(\.status) == [.errored, .errored, .errored])
        #expect(AppAction.decide(desired: Self.symFork, observed: broken.filter { $0.name == "sym-fork" }, needsRefresh: false) == .restart)
        #expect(ProcessTableCheck(evaluating: broken, against: apps) { _ in nil } == pass.check)

        // symlink-11: …but the agent rolls back (current -> v2, a new release): one reload per app. The recording
        // shows why one per call: `pm2 reload sym-cluster sym-fork` reloaded only sym-cluster and left sym-fork
        // errored. The fork's reload is answered by errored-02, the recorded reload of the errored fork app.
        let multiTarget = try PM2Fixtures.capture("symlink-11-reload-errored-after-fix.json")
        #expect(multiTarget.summaryAfter().map { "\($0.name):\($0.status)" } == ["sym-fork:errored", "sym-cluster:online", "sym-cluster:online"])
        pass = try await Self.pass(
            apps,
            needsRefresh: true,
            answers: [
                .init(reload("sym-fork"), "errored-02-reload-errored-fork.json", effect: "summary_after", apps: ["sym-fork"]),
                .init(reload("sym-cluster"), "symlink-11-reload-errored-after-fix.json", effect: "summary_after", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["sym-fork": .reload, "sym-cluster": .reload])
        #expect(pass.check == .allOnline)
        #expect(try PM2Fixtures.capture("errored-02-reload-errored-fork.json").codeVersions("probe_fork") == ["v2"])

        // symlink-12: the service is no longer desired here: delete each Ferry-owned app.
        pass = try await Self.pass(
            [],
            needsRefresh: true,
            answers: [
                .init(["delete", "sym-fork"], "symlink-12-delete.json", effect: "remove", apps: ["sym-fork"]),
                .init(["delete", "sym-cluster"], "symlink-12-delete.json", effect: "remove", apps: ["sym-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["sym-fork": .delete, "sym-cluster": .delete])
        #expect(pass.commands == [["delete", "sym-fork"], ["delete", "sym-cluster"], ["save", "--force"]])
        #expect(pass.table.isEmpty)
    }

    // MARK: - path-01…11

    static func pathApps(_ release: String) -> [AppSpec] {
        let cwd = "$PM2_PEER/deploy/releases/\(release)"
        let color = ["APP_COLOR": "\(release)-color"]
        return [
            .pm2TestApp("path-fork", script: cwd + "/server.js", cwd: cwd, env: color.merging(["PORT": "18411"]) { $1 }),
            .pm2TestApp(
                "path-cluster",
                script: cwd + "/server.js",
                cwd: cwd,
                mode: .cluster,
                instances: 2,
                env: color.merging(["PORT": "18412"]) { $1 }
            ),
        ]
    }

    @Test("replays recorded PM2 behaviour path-01…11: a changed script path needs delete + start, a reload cannot move it")
    func replaysPathSequence() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        let manager = try standIn.manager(namespace: "default")
        let (v1, v2) = (Self.pathApps("v1"), Self.pathApps("v2"))
        let eco = standIn.ecosystem
        let names = ["path-fork", "path-cluster"]
        func reload(_ app: String) -> [String] { ["reload", eco, "--only", app, "--update-env"] }
        func start(_ app: String) -> [String] { ["start", eco, "--only", app] }
        let save = PM2StandIn.Answer(["save", "--force"], "save.json")
        // The recordings moved the cwd along with the script: PM2 keeps both on reload (path-02…04), so both are named.
        let moved =
            "script changed from $PM2_PEER/deploy/releases/v1/server.js to $PM2_PEER/deploy/releases/v2/server.js; "
            + "cwd changed from $PM2_PEER/deploy/releases/v1 to $PM2_PEER/deploy/releases/v2"
        try standIn.setTable(fromCapture: "jlist-empty.json")

        // path-01: start both from releases/v1.
        var pass = try await Self.pass(
            v1,
            needsRefresh: true,
            answers: names.map { .init(start($0), "path-01-start-v1.json", effect: "summary_after", apps: [$0]) } + [save],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["path-fork": .start, "path-cluster": .start])
        #expect(pass.check == .allOnline)

        // path-02/03: the release moved to releases/v2. The decision is delete + start…
        let wanted = try await manager.processes()
        for app in v2 {
            #expect(AppAction.decide(desired: app, observed: wanted.filter { $0.name == app.name }, needsRefresh: true) == .replace(reason: moved))
        }
        // …because a reload through the v2 file (recorded startOrReload without and with --update-env) keeps v1:
        // the table still says releases/v1 and the probes still answered code v1, so the decision does not change.
        for capture in ["path-02-startOrReload-v2-no-update-env.json", "path-03-startOrReload-v2-update-env.json"] {
            try standIn.queue(names.map { .init(reload($0), capture, effect: "summary_after", apps: [$0]) })
            for app in v2 { try await manager.reload(app, ecosystem: eco) }
            let after = try await manager.processes()
            #expect(after.allSatisfy { $0.scriptPath == "$PM2_PEER/deploy/releases/v1/server.js" }, "\(capture)")
            #expect(try PM2Fixtures.capture(capture).codeVersions("probe_fork") == ["v1"])
            for app in v2 {
                let decision = AppAction.decide(desired: app, observed: after.filter { $0.name == app.name }, needsRefresh: false)
                #expect(decision == .replace(reason: moved))
            }
        }

        // path-04/05: back on v1 (restart of the v1 file, reload by name): same paths, so a reload per app.
        pass = try await Self.pass(
            v1,
            needsRefresh: true,
            answers: [
                .init(reload("path-fork"), "path-05-reload-name-only.json", effect: "summary_after", apps: ["path-fork"]),
                .init(reload("path-cluster"), "path-04-restart-eco-v1.json", effect: "summary_after", apps: ["path-cluster"]),
                save,
            ],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["path-fork": .reload, "path-cluster": .reload])
        #expect(pass.check == .allOnline)

        // path-06: the service goes away: delete both.
        pass = try await Self.pass(
            [],
            needsRefresh: true,
            answers: names.map { .init(["delete", $0], "path-06-delete.json", effect: "remove", apps: [$0]) } + [save],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["path-fork": .delete, "path-cluster": .delete])
        #expect(pass.table.isEmpty)

        // path-07: it comes back on v1 (a fresh daemon: its spawn lines precede pm2's output).
        pass = try await Self.pass(
            v1,
            needsRefresh: true,
            answers: names.map { .init(start($0), "path-07-start-v1-again.json", effect: "summary_after", apps: [$0]) } + [save],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["path-fork": .start, "path-cluster": .start])
        #expect(pass.check == .allOnline)

        // path-08/09: restart of the v2 file and startOrRestart with --update-env keep v1 too.
        for capture in ["path-08-restart-eco-v2-update-env.json", "path-09-startOrRestart-v2.json"] {
            try standIn.queue(names.map { .init(reload($0), capture, effect: "summary_after", apps: [$0]) })
            for app in v2 { try await manager.reload(app, ecosystem: eco) }
            let after = try await manager.processes()
            #expect(after.allSatisfy { $0.cwd == "$PM2_PEER/deploy/releases/v1" }, "\(capture)")
            #expect(try PM2Fixtures.capture(capture).codeVersions("probe_cluster") == ["v1", "v1"])
        }

        // path-10: what the adapter does for a moved script: delete + start, which runs v2 (and costs a restart).
        pass = try await Self.pass(
            v2,
            needsRefresh: true,
            answers: names.flatMap { name -> [PM2StandIn.Answer] in
                [
                    .init(["delete", name], "path-10-delete-then-start-v2.json", effect: "remove", apps: [name]),
                    .init(start(name), "path-10-delete-then-start-v2.json", effect: "summary_after", apps: [name]),
                ]
            } + [save],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.decisions == ["path-fork": .replace(reason: moved), "path-cluster": .replace(reason: moved)])
        #expect(
            pass.commands == [["delete", "path-fork"], start("path-fork"), ["delete", "path-cluster"], start("path-cluster"), ["save", "--force"]]
        )
        #expect(pass.readAfterEachAction)
        #expect(pass.check == .allOnline)
        #expect(pass.table.allSatisfy { $0.scriptPath == "$PM2_PEER/deploy/releases/v2/server.js" && $0.restarts == 0 })
        #expect(try PM2Fixtures.capture("path-10-delete-then-start-v2.json").codeVersions("probe_cluster") == ["v2", "v2"])
        for app in v2 {
            #expect(AppAction.decide(desired: app, observed: pass.table.filter { $0.name == app.name }, needsRefresh: false) == AppAction.none)
        }

        // path-11: delete all.
        pass = try await Self.pass(
            [],
            needsRefresh: true,
            answers: names.map { .init(["delete", $0], "path-11-delete.json", effect: "remove", apps: [$0]) } + [save],
            standIn: standIn,
            manager: manager
        )
        #expect(pass.commands == [["delete", "path-fork"], ["delete", "path-cluster"], ["save", "--force"]])
        #expect(pass.table.isEmpty)
    }
}
