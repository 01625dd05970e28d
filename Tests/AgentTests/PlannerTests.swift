import Shared
import Testing

@testable import Agent

@Suite("Planner: (decisions, state, observed, applied apps, env digests) → ordered actions")
struct PlannerTests {
    typealias Decisions = DesiredStateEvaluator.Result

    static let api5 = CoreFixture.release("api", serial: 5)
    static let api6 = CoreFixture.release("api", serial: 6, apps: ["api", "api-worker"])
    static let web3 = CoreFixture.release("web", serial: 3)
    static let apiApp = CoreFixture.specs(api5)[0]
    static let webApp = CoreFixture.specs(web3)[0]
    static let changedDigest = String(repeating: "0", count: 64)

    /// Both services applied with an unchanged env file.
    static let state: AgentState = {
        var state = AgentState()
        state["api"] = ServiceState(highestAcceptedSerial: 5, applied: CoreFixture.applied(api5))
        state["web"] = ServiceState(highestAcceptedSerial: 3, applied: CoreFixture.applied(web3))
        return state
    }()

    static let healthyTable = [CoreFixture.process(apiApp, pmId: 0), CoreFixture.process(webApp, pmId: 1)]

    /// The input where everything matches; each case changes what it tests.
    static func input(
        decisions: Decisions? = Decisions(decisions: ["api": .keep, "web": .keep]),
        state: AgentState = state,
        observed: [ManagedProcess] = healthyTable,
        appliedApps: [String: [AppSpec]] = ["api": [apiApp], "web": [webApp]],
        envDigests: [String: String] = ["api": CoreFixture.emptyDigest, "web": CoreFixture.emptyDigest],
        refreshesWaiting: Set<String> = [],
        refreshesOwed: Set<String> = [],
        services: Set<String> = []
    ) -> Planner.Input {
        Planner.Input(
            decisions: decisions,
            state: state,
            observed: observed,
            appliedApps: appliedApps,
            envDigests: envDigests,
            refreshesWaiting: refreshesWaiting,
            refreshesOwed: refreshesOwed,
            services: services
        )
    }

    static let install6 = AgentAction.install(service: "api", release: api6, payload: api6.payload())
    static let cache1 = CoreFixture.release("cache", serial: 1)

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var input: Planner.Input
        var expected: [AgentAction]
    }

    static let cases: [Case] = [
        Case(description: "everything matches: nothing to do", input: input(), expected: []),
        Case(
            description: "keep and skipFailed decisions plan nothing",
            input: input(decisions: Decisions(decisions: ["api": .skipFailed(serial: 9), "web": .keep])),
            expected: []
        ),
        Case(
            description: "a new serial is installed",
            input: input(decisions: Decisions(decisions: ["api": .install(api6, payload: api6.payload()), "web": .keep])),
            expected: [install6]
        ),
        Case(
            description: "a refusal is recorded and nothing running is touched",
            input: input(
                decisions: Decisions(
                    decisions: ["api": .refuse(serial: 9, reason: "signature check failed"), "web": .keep],
                    refusals: ["api": [.init(serial: 9, reason: "signature check failed")]]
                )
            ),
            expected: [.refuse(service: "api", serial: 9, reason: "signature check failed")]
        ),
        Case(
            description: "a service being installed is not drift-repaired in the same pass (its app is errored)",
            input: input(
                decisions: Decisions(decisions: ["api": .install(api6, payload: api6.payload()), "web": .keep]),
                observed: [CoreFixture.process(apiApp, pmId: 0, status: .errored), CoreFixture.process(webApp, pmId: 1)]
            ),
            expected: [install6]
        ),
        Case(
            description: "a changed env file refreshes the service instead of repairing its apps one by one",
            input: input(
                observed: [CoreFixture.process(apiApp, pmId: 0, status: .errored), CoreFixture.process(webApp, pmId: 1)],
                envDigests: ["api": changedDigest, "web": CoreFixture.emptyDigest]
            ),
            expected: [.refreshEnvironment(service: "api")]
        ),
        Case(
            description: "a changed env file whose refresh failed and waits out its backoff: its apps are drift-repaired meanwhile",
            input: input(
                observed: [CoreFixture.process(apiApp, pmId: 0, status: .errored), CoreFixture.process(webApp, pmId: 1)],
                envDigests: ["api": changedDigest, "web": CoreFixture.emptyDigest],
                refreshesWaiting: ["api"]
            ),
            expected: [.repair(service: "api", app: apiApp, action: .restart)]
        ),
        Case(
            description: "a failed reload of the env file already applied (a rollback's), its backoff over: refreshed again",
            input: input(refreshesOwed: ["api"]),
            expected: [.refreshEnvironment(service: "api")]
        ),
        Case(
            description: "a failed reload of the env file already applied, waiting out its backoff: its apps are drift-repaired",
            input: input(
                observed: [CoreFixture.process(apiApp, pmId: 0, status: .errored), CoreFixture.process(webApp, pmId: 1)],
                refreshesWaiting: ["api"]
            ),
            expected: [.repair(service: "api", app: apiApp, action: .restart)]
        ),
        Case(
            description: "a changed env file of a service being installed: the install applies it",
            input: input(
                decisions: Decisions(decisions: ["api": .install(api6, payload: api6.payload()), "web": .keep]),
                envDigests: ["api": changedDigest, "web": CoreFixture.emptyDigest]
            ),
            expected: [install6]
        ),
        Case(
            description: "an unreadable env file (no digest) triggers no refresh",
            input: input(envDigests: ["web": CoreFixture.emptyDigest]),
            expected: []
        ),
        Case(
            description: "drift: a missing app is started",
            input: input(observed: [CoreFixture.process(apiApp, pmId: 0)]),
            expected: [.repair(service: "web", app: webApp, action: .start)]
        ),
        Case(
            description: "drift: an errored app is restarted",
            input: input(observed: [CoreFixture.process(apiApp, pmId: 0), CoreFixture.process(webApp, pmId: 1, status: .errored)]),
            expected: [.repair(service: "web", app: webApp, action: .restart)]
        ),
        Case(
            description: "drift: a script that changed under the app is replaced",
            input: input(observed: [CoreFixture.process(apiApp, pmId: 0, script: "/srv/old/api.js"), CoreFixture.process(webApp, pmId: 1)]),
            expected: [
                .repair(service: "api", app: apiApp, action: .replace(reason: "script changed from /srv/old/api.js to \(apiApp.script)"))
            ]
        ),
        Case(
            description: "a refused release does not stop drift repair of the applied one",
            input: input(
                decisions: Decisions(
                    decisions: ["api": .refuse(serial: 2, reason: "replay"), "web": .keep],
                    refusals: ["api": [.init(serial: 2, reason: "replay")]]
                ),
                observed: [CoreFixture.process(webApp, pmId: 1)]
            ),
            expected: [
                .refuse(service: "api", serial: 2, reason: "replay"),
                .repair(service: "api", app: apiApp, action: .start),
            ]
        ),
        Case(
            description: "orphan: a Ferry-owned app in no applied release is removed",
            input: input(observed: healthyTable + [CoreFixture.stray("old-cron", pmId: 7)]),
            expected: [.removeOrphan(name: "old-cron")]
        ),
        Case(
            description: "an app the release being installed will bring is not an orphan",
            input: input(
                decisions: Decisions(decisions: ["api": .install(api6, payload: api6.payload()), "web": .keep]),
                observed: healthyTable + [CoreFixture.stray("api-worker", pmId: 7), CoreFixture.stray("old-cron", pmId: 8)]
            ),
            expected: [install6, .removeOrphan(name: "old-cron")]
        ),
        Case(
            description: "an app a refused release names is still an orphan",
            input: input(
                decisions: Decisions(
                    decisions: ["api": .refuse(serial: 6, reason: "expired"), "web": .keep],
                    refusals: ["api": [.init(serial: 6, reason: "expired")]]
                ),
                observed: healthyTable + [CoreFixture.stray("api-worker", pmId: 7)]
            ),
            expected: [.refuse(service: "api", serial: 6, reason: "expired"), .removeOrphan(name: "api-worker")]
        ),
        Case(
            description: "controller unreachable: only drift is repaired (no refusal, no install, orphans still removed)",
            input: input(
                decisions: nil,
                observed: [CoreFixture.process(apiApp, pmId: 0, status: .errored), CoreFixture.stray("old-cron", pmId: 8)]
            ),
            expected: [
                .repair(service: "api", app: apiApp, action: .restart),
                .repair(service: "web", app: webApp, action: .start),
                .removeOrphan(name: "old-cron"),
            ]
        ),
        Case(
            description: "controller unreachable: the apps of an install a crash interrupted are not orphans",
            input: input(
                decisions: nil,
                state: {
                    var interrupted = Self.state
                    interrupted["api"] = ServiceState(
                        highestAcceptedSerial: 5,
                        applied: CoreFixture.applied(api5),
                        pending: CoreFixture.applied(api6)
                    )
                    return interrupted
                }(),
                observed: healthyTable + [CoreFixture.stray("api-worker", pmId: 7)]
            ),
            expected: []
        ),
        // Orphans only when every app this instance should run is known (each used to be deleted as an orphan).
        Case(
            description: "an applied release that no longer decodes: no app is an orphan (its own would be taken for them)",
            input: input(
                state: {
                    var state = PlannerTests.state
                    var damaged = CoreFixture.applied(api5)
                    damaged.payload = Array("{\"service\":\"api\"}".utf8)
                    state["api"] = ServiceState(highestAcceptedSerial: 5, applied: damaged)
                    return state
                }(),
                observed: healthyTable + [CoreFixture.stray("old-cron", pmId: 7)],
                appliedApps: ["web": [webApp]]
            ),
            expected: []
        ),
        Case(
            description: "a state file lost (no service has an applied release): nothing of the table is removed",
            input: input(
                decisions: nil,
                state: AgentState(),
                observed: healthyTable,
                appliedApps: [:],
                services: ["api", "web"]
            ),
            expected: []
        ),
        Case(
            description: "a configured service not installed yet does not hold the others' orphans back",
            input: input(observed: healthyTable + [CoreFixture.stray("old-cron", pmId: 7)], services: ["api", "web", "cache"]),
            expected: [.removeOrphan(name: "old-cron")]
        ),
        Case(
            description: "no configured service applied, and one a state file lost: nothing of the table is removed",
            input: input(
                state: AgentState(),
                observed: healthyTable + [CoreFixture.stray("old-cron", pmId: 7)],
                appliedApps: [:],
                services: ["api"]
            ),
            expected: []
        ),
        Case(
            description: "a configured service being installed for the first time: orphans are removed",
            input: input(
                decisions: Decisions(decisions: ["api": .keep, "web": .keep, "cache": .install(cache1, payload: cache1.payload())]),
                observed: healthyTable + [CoreFixture.stray("old-cron", pmId: 7)],
                services: ["api", "web", "cache"]
            ),
            expected: [.install(service: "cache", release: cache1, payload: cache1.payload()), .removeOrphan(name: "old-cron")]
        ),
        Case(
            description: "every configured service applied: a stray app is an orphan",
            input: input(observed: healthyTable + [CoreFixture.stray("old-cron", pmId: 7)], services: ["api", "web"]),
            expected: [.removeOrphan(name: "old-cron")]
        ),
        Case(
            description: "controller unreachable with a changed env file: the refresh still happens",
            input: input(decisions: nil, envDigests: ["api": CoreFixture.emptyDigest, "web": changedDigest]),
            expected: [.refreshEnvironment(service: "web")]
        ),
        Case(
            description: "a service whose applied apps could not be built (bad env file) keeps its apps: they are not orphans",
            input: input(appliedApps: ["web": [webApp]], envDigests: ["web": CoreFixture.emptyDigest]),
            expected: []
        ),
        Case(
            description: "order: refusals, installs, env refreshes, repairs, orphans; each group sorted by service or name",
            input: input(
                decisions: Decisions(
                    decisions: [
                        "web": .refuse(serial: 1, reason: "replay"), "api": .install(api6, payload: api6.payload()),
                        "zeta": .refuse(serial: 4, reason: "bad signature"), "cache": .keep,
                    ],
                    refusals: [
                        "zeta": [.init(serial: 4, reason: "bad signature")], "web": [.init(serial: 1, reason: "replay")],
                        "cache": [.init(serial: 12, reason: "tampered")],
                    ]
                ),
                state: {
                    var state = PlannerTests.state
                    state["cache"] = ServiceState(applied: CoreFixture.applied(CoreFixture.release("cache", serial: 11)))
                    return state
                }(),
                observed: [
                    CoreFixture.stray("zz-old", pmId: 9), CoreFixture.process(webApp, pmId: 1, status: .errored),
                    CoreFixture.stray("aa-old", pmId: 8),
                ],
                appliedApps: [
                    "api": [apiApp], "web": [webApp], "cache": CoreFixture.specs(CoreFixture.release("cache", serial: 11)),
                ],
                envDigests: ["api": changedDigest, "web": CoreFixture.emptyDigest, "cache": changedDigest]
            ),
            expected: [
                .refuse(service: "cache", serial: 12, reason: "tampered"),
                .refuse(service: "web", serial: 1, reason: "replay"),
                .refuse(service: "zeta", serial: 4, reason: "bad signature"),
                install6,
                .refreshEnvironment(service: "cache"),
                .repair(service: "web", app: webApp, action: .restart),
                .removeOrphan(name: "aa-old"),
                .removeOrphan(name: "zz-old"),
            ]
        ),
    ]

    @Test(arguments: cases)
    func plans(_ testCase: Case) {
        #expect(Planner.plan(testCase.input) == testCase.expected)
    }
}
