import Foundation
import Glibc
import TestSupport
import Testing

/// `scripts/contained`, the net `scripts/test` runs the suite in: whatever a command leaves running when it exits
/// (daemons that called setsid() included) is named and ended, and the command's exit status is kept.
@Suite("scripts/contained")
struct ContainedScriptTests {
    static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/contained").path

    /// cgroup v2 mounted and writable (root, or a delegated subtree): otherwise the script runs the command without
    /// the net, which the last case checks is said.
    static var groupsWritable: Bool {
        guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8),
            let line = mounts.split(separator: "\n").first(where: { $0.split(separator: " ").dropFirst(2).first == "cgroup2" }),
            let own = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
            let path = own.split(separator: "\n").first(where: { $0.hasPrefix("0::") })?.dropFirst(3)
        else { return false }
        let mountpoint = String(line.split(separator: " ")[1])
        let probe = "\(mountpoint)\(path == "/" ? "" : String(path))/ferry-contained-probe-\(getpid())"
        guard mkdir(probe, 0o755) == 0 else { return false }
        rmdir(probe)
        return true
    }

    struct Case: Sendable, CustomStringConvertible {
        let label: String
        /// Shell text; `$$LEFT` in it is replaced with a file the script writes the pids it leaves behind into.
        let command: String
        let mode: String?
        let status: Int32
        let leftovers: Int
        var description: String { label }
    }

    static let cases: [Case] = [
        Case(label: "nothing left, success", command: "exit 0", mode: nil, status: 0, leftovers: 0),
        Case(label: "nothing left, failure kept", command: "exit 7", mode: nil, status: 7, leftovers: 0),
        Case(
            label: "a child and a setsid daemon left",
            command:
                "sleep 600 </dev/null >/dev/null 2>&1 & echo $! >> $$LEFT; setsid sleep 601 </dev/null >/dev/null 2>&1 & echo $! >> $$LEFT; exit 0",
            mode: nil,
            status: 0,
            leftovers: 2
        ),
        Case(
            label: "a grandchild whose parent exited",
            command: "sh -c 'sleep 602 </dev/null >/dev/null 2>&1 & echo $! >> $$LEFT' ; exit 5",
            mode: nil,
            status: 5,
            leftovers: 1
        ),
        Case(
            label: "leftovers fail a successful run when asked",
            command: "setsid sleep 603 </dev/null >/dev/null 2>&1 & echo $! >> $$LEFT; exit 0",
            mode: "fail",
            status: 3,
            leftovers: 1
        ),
        Case(
            label: "a failed run keeps its own status when asked to fail on leftovers",
            command: "setsid sleep 604 </dev/null >/dev/null 2>&1 & echo $! >> $$LEFT; exit 9",
            mode: "fail",
            status: 9,
            leftovers: 1
        ),
    ]

    @Test(.enabled(if: groupsWritable, "no writable cgroup v2 hierarchy here"), arguments: cases)
    func leftoversAreNamedAndEnded(_ check: Case) async throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-contained")
        defer { try? FileManager.default.removeItem(at: directory) }
        let left = directory.appendingPathComponent("left").path
        var environment = ProcessInfo.processInfo.environment
        environment["CONTAINED_LEFTOVERS"] = check.mode
        let result = try await Command.run(
            Self.script,
            ["/bin/sh", "-c", check.command.replacingOccurrences(of: "$$LEFT", with: left)],
            environment: environment
        )
        #expect(result.status == check.status, "\(result.stderr)")

        let pids = ((try? String(contentsOfFile: left, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count == check.leftovers)
        for pid in pids {
            #expect(result.stderr.contains("pid \(pid): sleep 60"), "\(result.stderr)")
            // Ended: gone, or a zombie its new parent has yet to collect.
            try await eventually("pid \(pid) to end", timeout: .seconds(10)) { Self.ended(pid) ? true : nil }
        }
        if check.leftovers == 0 {
            #expect(!result.stderr.contains("left running"), "\(result.stderr)")
        } else {
            #expect(result.stderr.contains("\(check.leftovers) process(es) left running"), "\(result.stderr)")
        }
    }

    static func ended(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    @Test func refusesAnUnknownMode() async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["CONTAINED_LEFTOVERS"] = "ignore"
        let result = try await Command.run(Self.script, ["true"], environment: environment)
        #expect(result.status == 2)
        #expect(result.stderr.contains("must be report or fail, not 'ignore'"))
    }
}
