import Foundation
import Logging
import Shared
import Supervisor
import TestSupport
import Testing

@testable import Agent

/// The ledger (`<state>/processes.json`) outlives a reboot, and a pid with its start tick names a process of one boot
/// only: a process of this boot that happens to match an entry of an earlier one (the PM2 daemon, a pm2 command the agent
/// just ran) must never be taken for a leftover and stopped.
@Suite struct ProcessLedgerTests {
    /// Whose boot an entry says it was recorded in, and whether it is a leftover when its process still runs.
    static let rows: [(boot: String?, leftover: Bool)] = [
        (BootID.current, true), (nil, true), ("00000000-0000-4000-8000-000000000000", false),
    ]

    @Test(arguments: rows)
    func onlyEntriesOfThisBootNameLeftovers(_ row: (boot: String?, leftover: Bool)) throws {
        try #require(BootID.current != nil, "this machine has /proc/sys/kernel/random/boot_id")
        try TestPaths.withTemporaryDirectorySync("ferry-ledger") { directory in
            let process = try SleepingProcess(seconds: 30)
            defer { process.stop() }
            let pid = process.pid
            let stat = try #require(ProcStat.read(pid: pid))
            let entry = ProcessLedger.Entry(name: "api", pid: pid, startTicks: stat.startTicks, bootID: row.boot)
            let path = directory.appendingPathComponent("processes.json").path
            try JSONEncoder().encode([entry]).write(to: URL(fileURLWithPath: path))
            let ledger = ProcessLedger(path: path, logger: Logger(label: "test"))
            let orphans = ProcessLedger.orphans(of: ledger.load(), in: [])
            #expect(orphans.map(\.pid) == (row.leftover ? [pid] : []), "\(String(describing: row.boot))")
        }
    }

    /// A recorded process the table does not list is its daemon's still when that daemon lists others (the parent of a
    /// listed process): PM2's `_old_` cluster worker during a reload. Here the test process stands for the daemon, and a
    /// process of another parent (this test runner's own parent) for the daemon of the listed ones.
    @Test(arguments: [true, false])
    func aProcessTheLiveDaemonRunsUnlistedIsNoOrphan(sameDaemon: Bool) throws {
        let listed = try SleepingProcess(seconds: 30)
        defer { listed.stop() }
        let unlisted = try SleepingProcess(seconds: 30)
        defer { unlisted.stop() }
        let stat = try #require(ProcStat.read(pid: unlisted.pid))
        let entry = ProcessLedger.Entry(name: "api", pid: unlisted.pid, startTicks: stat.startTicks, bootID: BootID.current)
        let spec = CoreFixture.specs(CoreFixture.release(serial: 1, apps: ["api"]))[0]
        var row = CoreFixture.process(spec, pmId: 0)
        row.pid = sameDaemon ? listed.pid : getppid()
        let orphans = ProcessLedger.orphans(of: [entry], in: [row])
        #expect(orphans.map(\.pid) == (sameDaemon ? [] : [unlisted.pid]))
    }

    @Test func aRecordCarriesThisBoot() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-ledger") { directory in
            let path = directory.appendingPathComponent("processes.json").path
            let ledger = ProcessLedger(path: path, logger: Logger(label: "test"))
            let own = getpid()
            let process = ManagedProcess(
                name: "api",
                namespace: "ferry",
                pmId: 0,
                pid: own,
                status: .online,
                restarts: 0,
                uptimeSeconds: 1,
                memoryBytes: 0,
                cpuPercent: 0,
                execMode: .fork,
                instances: 1,
                instanceIndex: 0,
                scriptPath: "/srv/a.js",
                cwd: "/srv",
                interpreter: "node"
            )
            let recorded = ledger.record([process], previous: [])
            #expect(recorded.map(\.bootID) == [BootID.current])
            #expect(ledger.load() == recorded)
        }
    }

    @Test(
        arguments: [
            ("6f1d2c3e-4b5a-4c6d-8e7f-901234567890\n", "6f1d2c3e-4b5a-4c6d-8e7f-901234567890"), ("", nil), ("not-a-uuid\n", nil),
            ("6F1D2C3E-4B5A-4C6D-8E7F-901234567890\n", nil),
        ] as [(String, String?)]
    )
    func theBootIDIsReadAsTheKernelWritesIt(_ text: String, _ expected: String?) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-boot") { directory in
            let path = directory.appendingPathComponent("boot_id").path
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            #expect(BootID.read(path: path) == expected)
        }
    }
}
