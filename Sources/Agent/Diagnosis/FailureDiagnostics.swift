import Glibc
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Gathers the evidence of a failed release — the failing instances as the process manager shows them (exit code,
/// signal) and the last lines of their stderr and stdout — into a `FailureDiagnosis`, masked.
///
/// Called when the verdict is in and before anything is rolled back: the rollback restarts the previous release,
/// whose output goes to the same log files under PM2, and would push the failing release's last lines out of the
/// tail.
enum FailureDiagnostics {
    /// What went wrong, as the install step knows it; the rest is read from the process manager.
    struct Verdict: Sendable, Equatable {
        var stage: FailureDiagnosis.Stage
        var cause: FailureDiagnosis.Cause
        var deadlineSeconds: Int64?
        var health: FailureDiagnosis.HealthProbe?
    }

    /// The diagnosis of `verdict` for the release whose apps are `apps`.
    ///
    /// Instances are listed failing ones first (any status but `online`), then by pm_id; log tails follow the same
    /// order, stderr before stdout, one per file (a file several instances share is read once and names them all),
    /// at most `FailureDiagnosis.maximumLogs`. A table that cannot be read gives a diagnosis without instances or logs.
    static func collect(
        _ verdict: Verdict,
        apps: [AppSpec],
        processManager: any ProcessManager,
        mask: SecretMask,
        at date: Date = Date()
    ) async -> FailureDiagnosis {
        var diagnosis = FailureDiagnosis(
            stage: verdict.stage,
            cause: verdict.cause,
            at: date,
            deadlineSeconds: verdict.deadlineSeconds,
            health: verdict.health
        )
        let names = Set(apps.map(\.name))
        guard let table = try? await processManager.processes() else { return diagnosis.mapText(mask.apply) }
        let explained = await processManager.explainingExits(table.filter { names.contains($0.name) })
        let ordered = explained.sorted { ($0.status == .online ? 1 : 0, $0.pmId) < ($1.status == .online ? 1 : 0, $1.pmId) }
        diagnosis.instances = ordered.prefix(FailureDiagnosis.maximumInstances).map { process in
            FailureDiagnosis.Instance(
                app: process.name,
                pmId: Int64(clamping: process.pmId),
                status: process.status.rawValue,
                restarts: Int64(clamping: process.restarts),
                exitCode: process.lastExitCode.map(Int64.init),
                signal: process.lastExitSignal
            )
        }
        diagnosis.logs = logs(of: ordered, mask: mask)
        return diagnosis.mapText(mask.apply)
    }

    /// How recent a rotated log file must be to stand in for an empty live one.
    static let rotatedFileAge: Double = 15 * 60

    /// The tail of the log file at `path`; when it holds nothing (rotated a moment ago: by the agent's rotation of PM2's
    /// logs or the builtin supervisor's, which both name the last file `<path>.1`), the tail of that rotated file, if
    /// it was written in the last `rotatedFileAge` seconds: what the app printed last is there. Before, a rotation at
    /// the wrong moment left the failure report without any of the app's output.
    static func tail(_ path: String, mask: SecretMask, now: Double = Double(time(nil))) -> LogTailReader.Tail? {
        if let tail = LogTailReader.read(path, mask: mask), !tail.lines.isEmpty { return tail }
        let rotated = path + ".1"
        var info = stat()
        guard stat(rotated, &info) == 0, now - Double(info.st_mtim.tv_sec) <= rotatedFileAge,
            let tail = LogTailReader.read(rotated, mask: mask), !tail.lines.isEmpty
        else { return nil }
        return tail
    }

    /// The log tails of `processes` in order, stderr before stdout, one per file.
    static func logs(of processes: [ManagedProcess], mask: SecretMask) -> [FailureDiagnosis.LogTail] {
        var tails: [FailureDiagnosis.LogTail] = []
        var indexByPath: [String: Int] = [:]
        for process in processes {
            let files: [(FailureDiagnosis.Stream, String?)] = [(.stderr, process.errLogPath), (.stdout, process.outLogPath)]
            for case (let stream, let path?) in files where path.hasPrefix("/") {
                let pmId = Int64(clamping: process.pmId)
                if let index = indexByPath[path] {
                    if !tails[index].pmIds.contains(pmId) { tails[index].pmIds.append(pmId) }
                    continue
                }
                guard tails.count < FailureDiagnosis.maximumLogs, let tail = Self.tail(path, mask: mask) else { continue }
                indexByPath[path] = tails.count
                tails.append(
                    FailureDiagnosis.LogTail(app: process.name, pmIds: [pmId], stream: stream, lines: tail.lines, truncated: tail.truncated)
                )
            }
        }
        return tails
    }
}
