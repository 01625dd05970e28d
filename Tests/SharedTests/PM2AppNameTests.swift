import Shared
import Testing

/// App names PM2's own commands misread when the agent addresses the app (`pm2 delete NAME`, `pm2 restart NAME`), or
/// that PM2 writes over its own process entry, are refused at publish and by the agent; everything else PM2 allows is
/// allowed.
@Suite struct PM2AppNameTests {
    static let refused: [(name: String, reason: String)] = [
        ("all", "means every app"),
        ("-x", "starts with -"),
        ("/api/", "regular expression"),
        (" api", "start or end with a space"),
        ("feed.json", "\".json\""),
        ("tmp/x.json", "\".json\""),
        ("api.jsonp", "\".json\""),
        ("conf.yml", "\".yml\""),
        ("a.yaml.bak", "\".yaml\""),
        ("app.config.js", "\".config.js\""),
        ("app.config.cjs", "\".config.cjs\""),
        ("app.config.mjs", "\".config.mjs\""),
        ("namespace", "field of PM2's process entry"),
        ("name", "field of PM2's process entry"),
        ("pm_id", "field of PM2's process entry"),
        ("env", "field of PM2's process entry"),
        ("script", "field of PM2's process entry"),
        ("instances", "field of PM2's process entry"),
        ("status", "field of PM2's process entry"),
    ]

    /// `PM2_HOME` in an app's env replaces the home of the daemon that runs it: refused at publish (and by the agent,
    /// `PM2App.envKeysMovingTheApp`), with its own reason; `NODE_APP_INSTANCE` stays the app's own.
    @Test func pm2HomeInAnAppsEnvIsRefused() {
        #expect(PM2App.envKeyProblem("PM2_HOME")?.contains("home of the PM2 daemon that runs the app") == true)
        #expect(PM2App.envKeysMovingTheApp.contains("PM2_HOME"))
        #expect(PM2App.envKeyProblem("NODE_APP_INSTANCE") == nil && PM2App.envKeyProblem("PM2_HOMEPAGE") == nil)
    }

    /// All but the first four rows are refused at publish only: a release signed before those rules (running, or kept
    /// to roll back to) still parses on an upgraded agent, and its apps still run under the builtin supervisor.
    @Test(arguments: refused)
    func refusedNames(_ name: String, _ reason: String) {
        let problem = PM2App.publishNameProblem(name)
        #expect(problem?.contains(reason) == true, "\(name): \(problem ?? "accepted")")
        let agentSide = Self.refused.prefix(4).contains { $0.name == name }
        #expect((PM2App.nameProblem(name) != nil) == agentSide, "\(name): \(PM2App.nameProblem(name) ?? "accepted") by agents")
    }

    @Test(arguments: ["api", "my api", "web-1", "api.v2", "json", "app.js", "yaml-worker", "Name", "names", "node.js", "café"])
    func allowedNames(_ name: String) {
        #expect(PM2App.publishNameProblem(name) == nil, "\(name)")
    }
}
