import Foundation
import Shared
import TestSupport
import Testing

/// An install that cannot download its artifact, for real: a live controller and `ferry-agent run`, then a controller
/// (on the same address) that offers a genuinely signed release whose artifact an object store on 127.0.0.1 does not
/// have yet.
@Suite("Install retry end to end", .serialized)
struct InstallRetryEndToEndTests {
    @Test(
        "an artifact that cannot be downloaded leaves the applied release running and reported, and installs once it can be",
        .timeLimit(.minutes(5)),
        arguments: Backend.allCases
    )
    func downloadFailureThenRetry(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in
            try await TestFileServer.with { store in try await run(fleet, store: store, backend: backend) }
        }
    }

    private func run(_ fleet: FleetFixture, store: TestFileServer, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let crashLater = fleet.root.appendingPathComponent("crash-later").path
        try await fleet.publish(serial: 1, version: "1.0.0", port: port, crashLater: crashLater)
        let config = try await fleet.enrollAgent(name: "edge-r", backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent", environment: ["FERRY_POLL_SECONDS": "1"])
        try await eventually("v1 serving", timeout: .seconds(60)) { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }

        // v2's artifact lives in an object store that does not have it yet.
        let archive = try Array(Data(contentsOf: fleet.makeArtifact(version: "2.0.0")))
        let digest = SHA256.hash(archive)
        let artifact = ArtifactReference(url: "http://127.0.0.1:\(store.port)/web-2.tgz", sha256: digest, size: Int64(archive.count))
        let v2 = try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: port)

        let controllerPort = fleet.controller.port
        let agentID = try Self.agentID(config: config)
        await fleet.controller.stop()
        let controller = RogueController(port: controllerPort)
        do {
            await controller.serve([v2], agentID: agentID)
            let waiting = try await eventually("the agent reports serial 2 not installed yet", timeout: .seconds(60)) { () -> ServiceStatus? in
                let service = await controller.recorder.reports.last?.services.first { $0.service == "web" }
                return service?.message.hasPrefix("serial 2 (2.0.0) not installed yet: artifact \(digest)") == true ? service : nil
            }
            #expect(waiting.phase == .running, "v1 still runs: \(waiting.message)")
            #expect(waiting.serial == 1)
            #expect(waiting.targetSerial == 2)
            #expect(waiting.failures.isEmpty, "a failed download is no verdict on the release: \(waiting.failures)")
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)

            // Meanwhile the operator changes the instance env file (a rotated secret): v1's apps get it although v2
            // cannot be downloaded. (The install failing at every pass used to leave the env refresh undone.)
            let envFile = fleet.root.appendingPathComponent("edge-r/env/web.env")
            try FileManager.default.createDirectory(at: envFile.deletingLastPathComponent(), withIntermediateDirectories: true)
            try "GREETING=rotated\n".write(to: envFile, atomically: true, encoding: .utf8)
            try await eventually("v1 serving with the changed env file while v2 waits", timeout: .seconds(60)) {
                await fleet.appAnswer(port: port)?.hasPrefix("1.0.0 rotated ") == true ? true : nil
            }
            // And v1 is still judged: from now on each of its starts crashes 1.5 s later, a loop behind an online table.
            // (Each failed download used to forget the restarts seen so far, so the loop was never found.)
            #expect(FileManager.default.createFile(atPath: crashLater, contents: Data()))
            let answer = try #require(await fleet.appAnswer(port: port))
            let pid = try #require(answer.split(separator: "pid=").last.flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            #expect(kill(pid, SIGKILL) == 0)
            let looping = try await eventually("the agent reports v1's crash loop while v2 waits", timeout: .seconds(90)) { () -> ServiceStatus? in
                let service = await controller.recorder.reports.last?.services.first { $0.service == "web" }
                return service?.health == .unhealthy ? service : nil
            }
            #expect(looping.serial == 1 && looping.targetSerial == 2, "\(looping.message)")
            try FileManager.default.removeItem(atPath: crashLater)

            // The store gets the artifact: the pending serial is tried again and installed.
            store.publish(archive, at: "/web-2.tgz")
            try await eventually("v2 serving", timeout: .seconds(60)) { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }
            let running = try await eventually("the agent reports serial 2 running", timeout: .seconds(60)) { () -> ServiceStatus? in
                let service = await controller.recorder.reports.last?.services.first { $0.service == "web" }
                return service?.serial == 2 && service?.phase == .running ? service : nil
            }
            #expect(running.message == "serial 2 (2.0.0) is running and healthy")
        }
        await controller.stop()
    }

    /// A store that serves other bytes than the release signed (an object overwritten in place, a proxy that alters
    /// it) fails the same way every time: the artifact is not downloaded again at every pass (each one poll interval
    /// after the last, a second here), but after 10 s, then 20, ... (at most 5 minutes), and the report says when. v1
    /// runs on meanwhile.
    @Test(
        "an artifact whose bytes never match the release is not downloaded again at every pass; the running release is still judged",
        .timeLimit(.minutes(3))
    )
    func aMismatchedArtifactBacksOff() async throws {
        try await FleetFixture.with { fleet in
            try await TestFileServer.with { bucket in
                let (port, crash) = try await Self.startV1(fleet, agent: "edge-m")

                let signed = try await Self.publishDamagedV2(fleet, bucket, port: port)
                func downloads() -> Int { bucket.requests.filter { $0.path == "/bucket/web-2.tgz" && $0.method == "GET" }.count }
                // The first download's outcome, whatever it says (a refusal says "refused serial 2").
                let message = try await eventually("the agent reports the mismatch", timeout: .seconds(60)) { () -> String? in
                    let text = try await fleet.fleetEntry(agent: "edge-m")?["message"]?.stringValue ?? ""
                    return text.contains("serial 2") ? text : nil
                }
                #expect(message.contains(SHA256.hash(signed).hex), "\(message)")
                // One download that does not match is not yet the release's fault (a damaged copy served once):
                // nothing counted before the second download, which comes 10 s or more after the first.
                let refusalsAfterOne = try await Self.refusals(fleet)
                if downloads() == 1 {
                    #expect(refusalsAfterOne == 0, "refused after one download: \(message)")
                    #expect(message.hasPrefix("serial 2 (2.0.0) not installed yet: artifact from"), "\(message)")
                }
                // Bytes that never match are the release's fault: listed as a refusal of serial 2, which its rollout
                // counts as a failure (a store that does not have the artifact yet lists nothing,
                // `downloadFailureThenRetry`).
                let counted = try await eventually("the rollout of serial 2 counts the refusal", timeout: .seconds(60)) { () -> JSONValue? in
                    let rollout = try await fleet.controller.get("/v1/rollouts?service=web&limit=1", token: fleet.viewerToken)["rollouts"]?
                        .arrayValue.first
                    return rollout?["counts"]?["failed"]?.intValue == 1 ? rollout : nil
                }
                #expect(downloads() >= 2, "refused after the second download that did not match, not the first")
                let failure = counted["failures"]?.arrayValue.first
                #expect(failure?["agentName"]?.stringValue == "edge-m" && failure?["kind"]?.stringValue == "refused", "\(counted)")
                // Passes run a second apart: none downloads it again within 10 s of the first download, on the times the
                // store saw (the test's own pace, slow on a loaded machine, does not count).
                let gets = { bucket.requests.filter { $0.path == "/bucket/web-2.tgz" && $0.method == "GET" }.map(\.at) }
                let firstDownload = try #require(gets().first)
                try await Task.sleep(until: firstDownload.advanced(by: .seconds(9)), clock: .continuous)
                let early = gets().filter { $0 < firstDownload.advanced(by: .seconds(9)) }.count
                #expect(early == 1, "downloaded \(early) times within 9 s of the first download")
                #expect(downloads() >= 1)
                // Refused, the serial is tried again only after half an hour, not after the backoff's next 20 s: the pass
                // that refused it says so.
                let refusedWait = try await eventually("the refusal's wait in the agent's log", timeout: .seconds(30)) { () -> Int? in
                    let log = ["agent.err", "agent.out"].map {
                        (try? String(contentsOf: fleet.root.appendingPathComponent("logs/\($0)"), encoding: .utf8)) ?? ""
                    }.joined()
                    let waits = log.split(separator: "tried again in ").dropFirst().compactMap { Int($0.prefix { $0.isNumber }) }
                    return waits.first { $0 >= 1800 }
                }
                #expect(refusedWait <= 2250, "30 minutes, spread by at most a quarter: \(refusedWait) s")
                #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true, "v1 runs on")
                let log = ["agent.err", "agent.out"].map {
                    (try? String(contentsOf: fleet.root.appendingPathComponent("logs/\($0)"), encoding: .utf8)) ?? ""
                }.joined()
                #expect(log.contains("could not be downloaded or extracted; tried again in"), "the passes between say so")

                // While serial 2 stays pending, v1 is still judged: it stops booting, and the report says unhealthy (it
                // said what it said before the download failed for as long as that went on).
                #expect(try await fleet.fleetEntry(agent: "edge-m")?["health"]?.stringValue == "healthy")
                try await Self.expectV1JudgedUnhealthy(fleet, port: port, crash: crash, agent: "edge-m")
            }
        }
    }

    /// A store that served a damaged copy once (a cache, a proxy, an object read while it was replaced) and the right
    /// bytes at the next try: the release installs, and its rollout counts no failure. (The first mismatch used to
    /// refuse the serial: one agent's bad path failed the rollout.)
    @Test("an artifact that did not match once installs at the next try, with no failure counted", .timeLimit(.minutes(3)))
    func aMismatchOnceIsNoRefusal() async throws {
        try await FleetFixture.with { fleet in
            try await TestFileServer.with { bucket in
                try await fleet.startController(extraArguments: ["--poll-seconds", "1"])
                let port = try freeLoopbackPort()
                try await fleet.publish(serial: 1, version: "1.0.0", port: port)
                let config = try await fleet.enrollAgent(name: "edge-o", longPollSeconds: 2)
                _ = try fleet.startAgent(config: config, label: "agent")
                try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-o")

                let signed = try await Self.publishDamagedV2(fleet, bucket, port: port)
                let message = try await eventually("the agent reports the mismatch", timeout: .seconds(60)) { () -> String? in
                    let text = try await fleet.fleetEntry(agent: "edge-o")?["message"]?.stringValue ?? ""
                    return text.contains("serial 2 (2.0.0) not installed yet") ? text : nil
                }
                #expect(message.contains("but the release signs \(SHA256.hash(signed))"), "\(message)")
                bucket.publish(signed, at: "/bucket/web-2.tgz")
                try await eventually("v2 serving", timeout: .seconds(60)) {
                    await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
                }
                try await eventually("the agent reports serial 2 running", timeout: .seconds(60)) {
                    try await fleet.fleetEntry(agent: "edge-o")?["serial"]?.intValue == 2 ? true : nil
                }
                #expect(try await Self.refusals(fleet) == 0, "a mismatch the next download did not repeat is no failure of the release")
            }
        }
    }

    /// A release whose files cannot be written (its ecosystem file's path is taken by a directory: a file system gone
    /// read-only or full does the same to a real fleet) is tried again after the install backoff's wait, not at every
    /// pass; meanwhile v1 runs, reported as running and judged (it stayed "deploying", its health frozen, for as long
    /// as the writes failed); once the path is free, v2 installs.
    @Test("a release that cannot be activated backs off, and the running release is still judged meanwhile", .timeLimit(.minutes(4)))
    func anActivationFailureBacksOff() async throws {
        try await FleetFixture.with { fleet in
            let (port, crash) = try await Self.startV1(fleet, agent: "edge-a")

            let ecosystem = fleet.root.appendingPathComponent("edge-a/state/services/web/ecosystem.json").path
            try FileManager.default.removeItem(atPath: ecosystem)
            try FileManager.default.createDirectory(atPath: "\(ecosystem)/taken", withIntermediateDirectories: true)
            try await fleet.publish(serial: 2, version: "2.0.0", port: port)

            let log = fleet.root.appendingPathComponent("logs/agent.err").path
            func attempts() -> Int {
                ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").components(separatedBy: "cannot activate serial 2").count - 1
            }
            _ = try await eventually("the first activation of serial 2 fails", timeout: .seconds(60), interval: .milliseconds(100)) {
                attempts() >= 1 ? true : nil
            }
            let first = ContinuousClock.now
            let entry = try await eventually("the report says v1 runs while serial 2 waits", timeout: .seconds(30)) { () -> JSONValue? in
                let entry = try await fleet.fleetEntry(agent: "edge-a")
                return entry?["message"]?.stringValue?.hasPrefix("serial 2 could not be activated") == true ? entry : nil
            }
            #expect(entry["phase"]?.stringValue == "running", "\(entry)")
            #expect(entry["serial"]?.intValue == 1, "\(entry)")
            // Passes run a second apart; the first retry comes 7.5 s or more after the first try (10 s less a quarter).
            try await Task.sleep(until: first.advanced(by: .seconds(6)), clock: .continuous)
            #expect(attempts() == 1, "activated \(attempts()) times within 6 s of the first failure")
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true, "v1 runs on")
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            #expect(text.contains("serial 2 could not be activated or applied; tried again in"), "the passes between say so")

            // v1 is judged meanwhile: it stops booting, and the report says unhealthy.
            try await Self.expectV1JudgedUnhealthy(fleet, port: port, crash: crash, agent: "edge-a")

            try FileManager.default.removeItem(atPath: ecosystem)
            try FileManager.default.removeItem(atPath: crash)
            try await fleet.waitUntilRunning("2.0.0", port: port, agent: "edge-a")
        }
    }

    /// A controller polled every second, serial 1 of `web` published (its server stops booting once the returned file
    /// exists) and an agent named `agent` running it; the app's port and that file.
    private static func startV1(_ fleet: FleetFixture, agent: String) async throws -> (port: Int, crash: String) {
        try await fleet.startController(extraArguments: ["--poll-seconds", "1"])
        let port = try freeLoopbackPort()
        let crash = fleet.root.appendingPathComponent("crash-v1").path
        try await fleet.publish(serial: 1, version: "1.0.0", port: port, crashWhen: crash)
        let config = try await fleet.enrollAgent(name: agent, longPollSeconds: 2)
        _ = try fleet.startAgent(config: config, label: "agent")
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: agent)
        return (port, crash)
    }

    /// v1 stops booting and its process is killed: the agent's report says unhealthy (the running release is judged).
    private static func expectV1JudgedUnhealthy(_ fleet: FleetFixture, port: Int, crash: String, agent: String) async throws {
        #expect(FileManager.default.createFile(atPath: crash, contents: Data()))
        let answer = try #require(await fleet.appAnswer(port: port))
        let pid = try #require(answer.split(separator: "pid=").last.flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        #expect(kill(pid, SIGKILL) == 0)
        try await eventually("the report says v1 is unhealthy", timeout: .seconds(60)) {
            try await fleet.fleetEntry(agent: agent)?["health"]?.stringValue == "unhealthy" ? true : nil
        }
    }

    /// Publishes serial 2 of `web`, whose artifact the bucket serves with one byte flipped (at `/bucket/web-2.tgz`);
    /// returns the bytes the release signs.
    private static func publishDamagedV2(_ fleet: FleetFixture, _ bucket: TestFileServer, port: Int) async throws -> [UInt8] {
        let signed = try Array(Data(contentsOf: fleet.makeArtifact(version: "2.0.0")))
        var damaged = signed
        damaged[damaged.count / 2] ^= 0xFF
        bucket.publish(damaged, at: "/bucket/web-2.tgz")
        let artifact = ArtifactReference(url: "\(bucket.baseURL)/bucket/web-2.tgz", sha256: SHA256.hash(signed), size: Int64(signed.count))
        let (status, body) = try await fleet.controller.publish(
            try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: port),
            token: fleet.operatorToken
        )
        #expect(status == 201, "\(body)")
        return signed
    }

    /// The refusals of `web` the controller's event log holds (a rollout's failure count is the agents failed now,
    /// which an install at the next try clears; the event stays).
    private static func refusals(_ fleet: FleetFixture) async throws -> Int {
        let answer: JSONValue = try await fleet.controller.get("/v1/events?service=web&limit=100", token: fleet.viewerToken)
        let events: [JSONValue] = answer["events"]?.arrayValue ?? []
        return events.filter { $0["kind"]?.stringValue == "refused" }.count
    }

    private static func agentID(config: String) throws -> String {
        let json = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: config))))
        guard let id = json["agentId"]?.stringValue else { throw HarnessError("no agentID in \(config)") }
        return id
    }
}
