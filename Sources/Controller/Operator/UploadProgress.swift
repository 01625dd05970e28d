import Foundation
import Synchronization

/// Shows upload progress on standard output: a redrawn bar on a terminal, a plain line every 10% otherwise (logs).
final class UploadProgress: Sendable {
    private struct State {
        var lastPercent = -1
        var finished = false
    }

    private let total: Int64
    private let isTerminal: Bool
    private let label: String
    private let output: FileHandle
    private let state = Mutex(State())

    /// - Parameter toStandardError: write to standard error (when standard output carries a JSON answer).
    convenience init(total: Int64, label: String, toStandardError: Bool = false) {
        self.init(
            total: total,
            label: label,
            isTerminal: isatty(toStandardError ? STDERR_FILENO : STDOUT_FILENO) == 1,
            output: toStandardError ? .standardError : .standardOutput
        )
    }

    init(total: Int64, label: String, isTerminal: Bool, output: FileHandle = .standardOutput) {
        self.total = max(total, 1)
        self.isTerminal = isTerminal
        self.label = label
        self.output = output
    }

    /// Reports `sent` bytes so far.
    func update(_ sent: Int64) {
        let percent = Int(min(100, max(0, sent * 100 / total)))
        let line: String? = state.withLock { state in
            guard !state.finished else { return nil }
            if isTerminal {
                guard percent != state.lastPercent else { return nil }
                state.lastPercent = percent
                let width = 30
                let filled = width * percent / 100
                let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                return "\r\(label) [\(bar)] \(String(format: "%3d", percent))% \(Self.size(sent))/\(Self.size(total))"
            }
            let step = percent / 10 * 10
            guard step > state.lastPercent, step < 100 else { return nil }
            state.lastPercent = step
            return "\(label): \(step)% (\(sent) of \(total) bytes)\n"
        }
        if let line { output.write(Data(line.utf8)) }
    }

    /// Reports completion.
    func finish() {
        let line: String? = state.withLock { state in
            guard !state.finished else { return nil }
            state.finished = true
            if isTerminal {
                return "\r\(label) [\(String(repeating: "#", count: 30))] 100% \(Self.size(total))/\(Self.size(total))\n"
            }
            return "\(label): 100% (\(total) of \(total) bytes)\n"
        }
        if let line { output.write(Data(line.utf8)) }
    }

    static func size(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : "\(String(format: "%.1f", value)) \(units[unit])"
    }
}
