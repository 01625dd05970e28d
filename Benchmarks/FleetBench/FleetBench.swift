// `scripts/bench-fleet [AGENTS]`: a fleet of simulated agents against a real `ferry-controller serve`.
//
// Starts its own controller (the `--controller-bin` given, a release build for figures), publishes serial 1 of a
// service through the real CLI, enrolls AGENTS agents through the API (each on one kept-alive connection, TLS with
// `--tls`), optionally lets them report every `--report-seconds` for `--steady` seconds (long-polling in between, as
// `ferry-agent` does), parks one `?wait=60` long-poll per agent with `If-None-Match`, publishes serial 2 through the CLI
// and measures how the fleet learns of it. Every agent then reports at once. Prints the figures, the controller's RSS
// and CPU and this generator's own CPU; exits 1 when an agent was missed or woken early (the CI check), 2 on a setup
// failure.

import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Shared

#if canImport(Glibc)
import Glibc
#endif

@main
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "FleetBench",
        abstract: "Simulated agents against a real controller: publish duration, wake-up latency, reports, memory."
    )

    @Option(name: .long, help: "Simulated agents.") var agents = 1000
    @Option(name: .customLong("controller-bin"), help: "The ferry-controller executable to run.") var controllerBin: String
    @Flag(name: .long, help: "Serve and connect over TLS (self-signed certificate for 127.0.0.1).") var tls = false
    @Option(name: .long, help: "Seconds each parked long-poll may wait (?wait=).") var wait = 60
    @Option(name: .long, help: "Seconds of steady reporting before parking (0: none).") var steady = 0
    @Option(name: .customLong("report-seconds"), help: "Report interval in the steady phase.") var reportSeconds = 30
    /// One loop per core by default: on one loop, decrypting and checking 10,000 woken answers over TLS queued behind
    /// each other in the generator and showed up as wake latency (docs/benchmarks.md).
    @Option(name: .customLong("event-loops"), help: "Event loop threads of the generator (default: one per core).")
    var eventLoops = min(16, System.coreCount)
    @Option(name: .customLong("enroll-concurrency"), help: "Enrolments in flight at once.") var enrollConcurrency = 32
    @Option(name: .customLong("work-dir"), help: "Work directory (default: a new one under /tmp, removed at the end).") var workDir: String?
    @Option(
        name: .long,
        help:
            "An nginx executable: replay the burst of reports after the wake against it (`return 204`, same requests, same schedule) as the baseline."
    )
    var nginx: String?
    @Option(
        name: .long,
        help: "A PostgreSQL database URL for the controller (serve --database), instead of SQLite in the work directory. It should be empty."
    )
    var database: String?

    func validate() throws {
        guard (1...50_000).contains(agents) else { throw ValidationError("--agents must be between 1 and 50000") }
        guard (20...60).contains(wait) else { throw ValidationError("--wait must be between 20 and 60 (the controller's maximum)") }
        guard (0...86_400).contains(steady), (2...60).contains(reportSeconds) else {
            throw ValidationError("--steady must be 0...86400 and --report-seconds 2...60")
        }
        guard (1...16).contains(eventLoops), (1...1024).contains(enrollConcurrency) else {
            throw ValidationError("--event-loops must be 1...16 and --enroll-concurrency 1...1024")
        }
    }

    func run() async throws {
        let descriptors = raiseOpenFileLimit(to: agents + 256)
        guard descriptors >= agents + 64 else {
            throw BenchError("the open-file limit (\(descriptors)) is too low for \(agents) connections; raise ulimit -n")
        }
        let directory = try workDir ?? makeTemporaryDirectory()
        defer { if workDir == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let (artifact, ecosystem) = try BenchArtifact.write(into: directory)
        let controller = try await BenchController.start(
            .init(executable: controllerBin, directory: directory, tls: tls, agents: agents, database: database)
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoops)
        let outcome: Result<Bool, any Error>
        do {
            outcome = .success(
                try await measure(controller: controller, group: group, artifact: artifact, ecosystem: ecosystem, directory: directory)
            )
        } catch {
            outcome = .failure(error)
        }
        await controller.stop()
        try? await group.shutdownGracefully()
        switch outcome {
        case .success(true): return
        case .success(false): throw ExitCode(1)
        case .failure(let error):
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// The run itself; `false` when an agent was missed or woken early.
    private func measure(
        controller: BenchController,
        group: MultiThreadedEventLoopGroup,
        artifact: String,
        ecosystem: String,
        directory: String
    ) async throws -> Bool {
        let context: NIOSSLContext?
        if let caFile = controller.caFile {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .file(caFile)
            configuration.certificateVerification = .noHostnameVerification
            context = try NIOSSLContext(configuration: configuration)
        } else {
            context = nil
        }
        let scenario = FleetScenario(
            parameters: .init(
                agents: agents,
                waitSeconds: wait,
                steadySeconds: steady,
                reportSeconds: reportSeconds,
                enrollConcurrency: enrollConcurrency
            ),
            controller: controller,
            group: group,
            tls: context
        )
        // `/metrics` is read over a connection of its own each time: one kept open from the start would be closed by the
        // controller's header timeout while the agents enrol.
        let readWaiters = { @Sendable () async throws -> Int in
            let connection = try await BenchConnection.connect(host: "127.0.0.1", port: controller.port, tls: context, group: group)
            defer { Task { await connection.close() } }
            return try await Self.waiters(connection)
        }
        let readRoutes = { @Sendable () async throws -> [String: Double] in
            let connection = try await BenchConnection.connect(host: "127.0.0.1", port: controller.port, tls: context, group: group)
            defer { Task { await connection.close() } }
            return try await Self.routeSeconds(connection)
        }
        let generatorCPUAtStart = ProcessUsage.ownCPUSeconds
        log("controller \(controller.url) (pid \(controller.pid)); \(agents) agents; \(tls ? "TLS" : "plain HTTP")")

        _ = try await controller.publish(version: "1.0.1", artifact: artifact, ecosystem: ecosystem)
        let idle = controller.usage
        let enrollStarted = ContinuousClock.now
        let fleet = try await scenario.enrollAll { done in log("enrolled \(done)") }
        log("enrolled \(fleet.count) agents in \(seconds(ContinuousClock.now - enrollStarted)) s")
        let enrolled = controller.usage

        let state = ScenarioState(agents: agents)
        let steadyUntil = ContinuousClock.now + .seconds(steady)
        var samples: [(at: ContinuousClock.Instant, usage: ProcessUsage)] = []
        var published: (duration: Duration, startedAt: NIODeadline, returnedAt: NIODeadline)?
        var parkedUsage: ProcessUsage?
        var wakeCPU: Double?
        // The publish's requests as the controller timed them, and its database files, just before the publish.
        var routesBefore: [String: Double]?
        var database: (main: Int64, wal: Int64)?
        // The largest the WAL was when sampled during the steady phase.
        var largestWAL: Int64 = 0
        let databasePath = controller.setup.directory + "/data/ferry.sqlite"

        let outcomes = try await withThrowingTaskGroup(of: (Int, AgentOutcome)?.self) { group in
            for agent in fleet {
                group.addTask { (agent.index, await scenario.run(agent, steadyUntil: steadyUntil, state: state, newSerial: 2)) }
            }
            // The coordinator: samples memory during the steady phase, publishes once every agent is parked.
            if steady > 0 { log("steady phase: reports every \(reportSeconds) s for \(steady) s") }
            while ContinuousClock.now < steadyUntil {
                if let usage = controller.usage { samples.append((ContinuousClock.now, usage)) }
                largestWAL = max(largestWAL, Self.databaseSizes(databasePath).wal)
                try await Task.sleep(for: .seconds(min(10, max(1, steady / 30))))
            }
            let parkDeadline = ContinuousClock.now + .seconds(Int64(steady > 0 ? reportSeconds + wait * 3 : wait * 3))
            let parkingSince = ContinuousClock.now
            while true {
                guard ContinuousClock.now < parkDeadline else { throw BenchError("the agents did not all park in time") }
                let (count, oldest) = state.parkedSummary
                // Publish while the oldest parked long-poll has at least 15 s left, so none times out meanwhile; when the
                // parks are spread wider than that (10,000 first polls on a loaded machine), once every agent has been
                // parked for a whole wait: a poll whose wait ends during the publish polls again (not a miss).
                let fresh = oldest.map { NIODeadline.now() - $0 < .seconds(Int64(wait - 15)) } ?? false
                if count == agents, fresh || ContinuousClock.now > parkingSince + .seconds(Int64(wait)), try await readWaiters() == agents {
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            parkedUsage = controller.usage
            log("all \(agents) long-polls parked (controller RSS \(megabytes(parkedUsage?.residentBytes)) MB); publishing serial 2")
            routesBefore = try? await readRoutes()
            database = Self.databaseSizes(databasePath)
            let cpuBefore = controller.usage?.cpuSeconds
            let startedAt = NIODeadline.now()
            state.publishStartedAt = startedAt
            let duration = try await controller.publish(version: "1.0.2", artifact: artifact, ecosystem: ecosystem)
            published = (duration, startedAt, NIODeadline.now())
            var outcomes: [AgentOutcome?] = Array(repeating: nil, count: agents)
            while let next = try await group.next() {
                guard let (index, outcome) = next else { continue }
                outcomes[index] = outcome
            }
            if let cpuBefore, let after = controller.usage?.cpuSeconds { wakeCPU = after - cpuBefore }
            return outcomes.compactMap { $0 }
        }
        let generatorCPU = ProcessUsage.ownCPUSeconds - generatorCPUAtStart
        let batches = try? await { () async throws -> [String: Double] in
            let connection = try await BenchConnection.connect(host: "127.0.0.1", port: controller.port, tls: context, group: group)
            defer { Task { await connection.close() } }
            return try await Self.metrics(
                connection,
                [
                    "ferry_status_batches_total", "ferry_status_batch_duration_seconds_sum", "ferry_status_batched_reports_total",
                    "ferry_status_report_handler_answers_total",
                    "ferry_store_wal_restart_seconds_count", "ferry_store_wal_restart_seconds_sum",
                    #"ferry_store_wal_restart_seconds_bucket{le="0.1"}"#,
                ]
            )
        }()
        let routesAfter = try? await readRoutes()
        let final = controller.usage
        // Three seconds later: what the controller keeps once the burst is over (it trims its heap after a burst).
        try await Task.sleep(for: .seconds(3))
        let settled = controller.usage
        for agent in fleet { await agent.connection.close() }
        for outcome in outcomes { await outcome.reopened?.close() }

        guard let published else { throw BenchError("the publish did not run") }
        var wakes: [Duration] = []
        var duringPublish = 0
        var missed: [String] = []
        var wrongState: [String] = []
        for (agent, outcome) in zip(fleet, outcomes) {
            switch outcome.wake {
            case .woken(let at, let body):
                if at < published.returnedAt { duringPublish += 1 }
                wakes.append(at < published.returnedAt ? .zero : elapsed(from: published.returnedAt, to: at))
                if let problem = FleetScenario.check(body, agent: agent, serial: 2) { wrongState.append("\(agent.name): \(problem)") }
            case .missed(let why):
                missed.append("\(agent.name): \(why)")
            }
        }
        let early = zip(fleet, outcomes).flatMap { agent, outcome in outcome.early.map { "\(agent.name): \($0)" } }
        let reportFailures = zip(fleet, outcomes).flatMap { agent, outcome in outcome.reportFailures.map { "\(agent.name): \($0)" } }
        let steadyReports = outcomes.flatMap(\.steadyReports)
        let wakeReports = outcomes.compactMap(\.wakeReport)
        var baseline: (latencies: [Duration], cpuSeconds: Double)?
        if let nginx {
            let sent = zip(fleet, outcomes).compactMap { agent, outcome in outcome.wakeReportSent.map { (agent, $0) } }
            if let first = sent.map(\.1.at).min() {
                let requests = sent.map { agent, report in
                    BurstRequest(path: agent.statusPath, token: agent.token, body: report.body, offset: elapsed(from: first, to: report.at))
                }
                log("replaying \(requests.count) reports against nginx (the baseline)")
                let tlsFiles = controller.caFile.flatMap { certificate in controller.tlsKeyFile.map { (certificate: certificate, key: $0) } }
                let server = try await NginxBaseline.start(executable: nginx, directory: directory, connections: requests.count, tls: tlsFiles)
                do {
                    let cpuBefore = server.cpuSeconds
                    let latencies = try await server.replay(requests, tls: context, group: group)
                    baseline = (latencies, server.cpuSeconds - cpuBefore)
                    await server.stop()
                } catch {
                    await server.stop()
                    throw error
                }
            }
        }

        print("== fleet bench: \(agents) agents, \(tls ? "TLS" : "plain HTTP"), long-poll wait \(wait) s")
        print("publish (CLI, start to exit)        \(seconds(published.duration)) s")
        if let routesBefore, let routesAfter {
            let spent = { (route: String) in String(format: "%.3f", (routesAfter[route] ?? 0) - (routesBefore[route] ?? 0)) }
            print(
                "publish inside the controller       /v1/artifacts \(spent("/v1/artifacts")) s, /v1/artifacts/:sha256 "
                    + "\(spent("/v1/artifacts/:sha256")) s, POST /v1/releases \(spent("/v1/releases")) s (the rest is the CLI's: "
                    + "its start, signing, connecting)"
            )
        }
        if self.database != nil {
            print("controller database                 PostgreSQL (--database; its sizes are not read)")
        } else if let database {
            print(
                "controller database at the publish  \(megabytes(database.main)) MB, WAL \(megabytes(database.wal)) MB"
                    + (steady > 0 ? " (largest sampled during the steady phase: \(megabytes(largestWAL)) MB)" : "")
            )
        }
        print(
            "wake after publish returned         p50 \(seconds(percentile(wakes, 0.5))) s  p99 \(seconds(percentile(wakes, 0.99))) s  "
                + "max \(seconds(wakes.max())) s  (\(wakes.count) woken, \(duringPublish) before the CLI returned, counted as 0)"
        )
        print("missed                              \(missed.count + wrongState.count)")
        print("woken early                         \(early.count)")
        if !steadyReports.isEmpty {
            print(
                "status report, steady (every \(reportSeconds) s)  p50 \(millis(percentile(steadyReports, 0.5))) ms  "
                    + "p99 \(millis(percentile(steadyReports, 0.99))) ms  max \(millis(steadyReports.max())) ms  (\(steadyReports.count) reports)"
            )
        }
        print(
            "status report, all after the wake   p50 \(millis(percentile(wakeReports, 0.5))) ms  p99 \(millis(percentile(wakeReports, 0.99))) ms  "
                + "max \(millis(wakeReports.max())) ms  (\(wakeReports.count) reports)"
        )
        if let baseline {
            let ratio = percentile(wakeReports, 0.99).flatMap { ours in
                percentile(baseline.latencies, 0.99).map { String(format: "%.1f", ratioOf(ours, $0)) }
            }
            print(
                "  the same reports to nginx (204)   p50 \(millis(percentile(baseline.latencies, 0.5))) ms  "
                    + "p99 \(millis(percentile(baseline.latencies, 0.99))) ms  max \(millis(baseline.latencies.max())) ms  "
                    + "(same schedule; replay and handshakes included, nginx CPU \(String(format: "%.2f", baseline.cpuSeconds)) s)"
            )
            print("  report burst p99, controller / nginx  \(ratio ?? "-")")
        }
        print("report failures                     \(reportFailures.count)")
        let reconnects = outcomes.reduce(0) { $0 + $1.reconnects }
        if reconnects > 0 { print("reconnected after an idle close      \(reconnects)") }
        print(
            "controller RSS                      idle \(megabytes(idle?.residentBytes)) MB  enrolled \(megabytes(enrolled?.residentBytes)) MB  "
                + "parked \(megabytes(parkedUsage?.residentBytes)) MB  end \(megabytes(final?.residentBytes)) MB  "
                + "3 s later \(megabytes(settled?.residentBytes)) MB"
        )
        if let idle, let parkedUsage {
            let perPoll = Double(parkedUsage.residentBytes - idle.residentBytes) / Double(max(1, agents)) / 1024
            print("controller RSS per parked agent     \(String(format: "%.1f", perPoll)) KB (parked - idle)")
        }
        if samples.count >= 3 {
            let slope = Self.slopePerHour(samples.map { ($0.at, Double($0.usage.residentBytes)) })
            let first = samples[0].usage
            let last = samples[samples.count - 1].usage
            let span = samples[samples.count - 1].at - samples[0].at
            print(
                "controller RSS during steady phase  \(megabytes(first.residentBytes)) → \(megabytes(last.residentBytes)) MB over "
                    + "\(seconds(span)) s; slope \(String(format: "%+.1f", slope / 1_048_576)) MB/hour (least squares, \(samples.count) samples)"
            )
            let cpu = (last.cpuSeconds - first.cpuSeconds) / max(0.001, Double(span.components.seconds))
            print("controller CPU during steady phase  \(String(format: "%.1f", cpu * 100)) % of one core")
            // Whether the growth levels off and whether the same load costs more CPU as time goes on.
            if samples.count >= 6 {
                let secondHalf = Self.slopePerHour(samples[(samples.count / 2)...].map { ($0.at, Double($0.usage.residentBytes)) })
                let thirds = [0, samples.count / 3, 2 * samples.count / 3, samples.count - 1].map { samples[$0] }
                let percents = zip(thirds, thirds.dropFirst()).map { start, end in
                    let seconds = Double((end.at - start.at).components.seconds)
                    return String(format: "%.1f", (end.usage.cpuSeconds - start.usage.cpuSeconds) / max(0.001, seconds) * 100)
                }
                print(
                    "  second half alone                 slope \(String(format: "%+.1f", secondHalf / 1_048_576)) MB/hour; "
                        + "CPU by thirds \(percents.joined(separator: " → ")) % of one core"
                )
            }
        }
        if let batches, let count = batches["ferry_status_batches_total"], count > 0, let sum = batches["ferry_status_batch_duration_seconds_sum"] {
            print(
                "status writes                       \(Int(count)) transactions, \(Int(batches["ferry_status_batched_reports_total"] ?? 0)) reports, "
                    + "\(String(format: "%.2f", sum)) s committing (mean \(String(format: "%.1f", sum / count * 1000)) ms); "
                    + "\(Int(batches["ferry_status_report_handler_answers_total"] ?? 0)) answered before the router"
            )
        }
        if let batches, let count = batches["ferry_store_wal_restart_seconds_count"], count > 0,
            let sum = batches["ferry_store_wal_restart_seconds_sum"]
        {
            let quick = batches[#"ferry_store_wal_restart_seconds_bucket{le="0.1"}"#] ?? 0
            print(
                "WAL restarts (writer held)          \(Int(count)), \(String(format: "%.2f", sum)) s in all "
                    + "(mean \(String(format: "%.1f", sum / count * 1000)) ms; \(Int(count - quick)) over 100 ms)"
            )
        }
        if let wakeCPU { print("controller CPU, publish to last report  \(String(format: "%.2f", wakeCPU)) s") }
        print("controller CPU total                \(String(format: "%.2f", final?.cpuSeconds ?? 0)) s")
        print("generator CPU (this process)        \(String(format: "%.2f", generatorCPU)) s on \(eventLoops) event loop(s)")
        for line in (missed + wrongState).prefix(5) { print("  missed: \(line)") }
        for line in early.prefix(5) { print("  early: \(line)") }
        for line in reportFailures.prefix(5) { print("  report failure: \(line)") }
        let passed = missed.isEmpty && wrongState.isEmpty && early.isEmpty && wakes.count == agents
        print("result: \(passed ? "ok" : "FAILED") (missed \(missed.count + wrongState.count), early \(early.count))")
        return passed
    }

    /// The values of the unlabelled series `names` from `/metrics`.
    private static func metrics(_ connection: BenchConnection, _ names: [String]) async throws -> [String: Double] {
        try await series(connection).filter { names.contains($0.key) }
    }

    /// Every series of `/metrics` (`name` or `name{labels}`) and its value.
    private static func series(_ connection: BenchConnection) async throws -> [String: Double] {
        let response = try await connection.exchange(.GET, "/metrics")
        var values: [String: Double] = [:]
        for line in String(buffer: response.body).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        return values
    }

    /// Seconds spent per route so far (`ferry_http_request_duration_seconds_sum{route="..."}` from `/metrics`).
    private static func routeSeconds(_ connection: BenchConnection) async throws -> [String: Double] {
        let prefix = "ferry_http_request_duration_seconds_sum{"
        var values: [String: Double] = [:]
        for (name, value) in try await series(connection) where name.hasPrefix(prefix) {
            guard let start = name.range(of: "route=\""), let end = name[start.upperBound...].firstIndex(of: "\"") else { continue }
            values[String(name[start.upperBound..<end]), default: 0] += value
        }
        return values
    }

    /// The sizes of the SQLite database and its WAL (0 for a file that is not there).
    private static func databaseSizes(_ path: String) -> (main: Int64, wal: Int64) {
        func size(_ file: String) -> Int64 {
            var info = stat()
            return stat(file, &info) == 0 ? Int64(info.st_size) : 0
        }
        return (size(path), size(path + "-wal"))
    }

    /// `ferry_long_poll_waiters` from `/metrics`.
    private static func waiters(_ connection: BenchConnection) async throws -> Int {
        let value = try await metrics(connection, ["ferry_long_poll_waiters"])["ferry_long_poll_waiters"] ?? -1
        return Int(exactly: value.rounded()) ?? -1
    }

    private func raiseOpenFileLimit(to wanted: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < rlim_t(wanted) {
            limit.rlim_cur = min(limit.rlim_max, rlim_t(wanted))
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(limit.rlim_cur)
    }

    private func makeTemporaryDirectory() throws -> String {
        var template = Array("/tmp/ferry-fleet-bench.XXXXXX".utf8CString)
        guard let path = mkdtemp(&template) else { throw BenchError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        return String(cString: path)
    }

    /// Least-squares slope of `points` in units per hour.
    static func slopePerHour(_ points: [(ContinuousClock.Instant, Double)]) -> Double {
        guard let origin = points.first?.0 else { return 0 }
        let xs = points.map { Double(($0.0 - origin).components.seconds) + Double(($0.0 - origin).components.attoseconds) / 1e18 }
        let ys = points.map(\.1)
        let meanX = xs.reduce(0, +) / Double(xs.count)
        let meanY = ys.reduce(0, +) / Double(ys.count)
        var numerator = 0.0
        var denominator = 0.0
        for (x, y) in zip(xs, ys) {
            numerator += (x - meanX) * (y - meanY)
            denominator += (x - meanX) * (x - meanX)
        }
        return denominator == 0 ? 0 : numerator / denominator * 3600
    }
}

private func log(_ message: String) {
    FileHandle.standardError.write(Data("[fleet-bench] \(message)\n".utf8))
}

private func percentile(_ values: [Duration], _ fraction: Double) -> Duration? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let rank = Int((Double(sorted.count) * fraction).rounded(.up)) - 1
    return sorted[min(sorted.count - 1, max(0, rank))]
}

private func seconds(_ duration: Duration?) -> String {
    guard let duration else { return "-" }
    let (whole, atto) = duration.components
    return String(format: "%.3f", Double(whole) + Double(atto) / 1e18)
}

private func millis(_ duration: Duration?) -> String {
    guard let duration else { return "-" }
    let (whole, atto) = duration.components
    return String(format: "%.1f", (Double(whole) + Double(atto) / 1e18) * 1000)
}

private func megabytes(_ bytes: Int64?) -> String {
    guard let bytes else { return "-" }
    return String(format: "%.1f", Double(bytes) / 1_048_576)
}

/// `a / b` in seconds.
private func ratioOf(_ a: Duration, _ b: Duration) -> Double {
    let seconds = { (d: Duration) in Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
    return seconds(a) / max(1e-9, seconds(b))
}

/// `to - from` as a `Duration`.
private func elapsed(from: NIODeadline, to: NIODeadline) -> Duration {
    .nanoseconds(Int64(to.uptimeNanoseconds) - Int64(from.uptimeNanoseconds))
}
