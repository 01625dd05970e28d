/// Reading PM2's daemon log (`$PM2_HOME/pm2.log`) for what `jlist` does not keep.
///
/// PM2 7 logs every exit as `App [<name>:<pm_id>] exited with code [<code>] via signal [<signal>]` (lib/God.js,
/// `handleExit`), and keeps only the code in its table. PM2 7.0.3 passes `code || 0` and `signal` (fork mode) or
/// `signal || 'SIGINT'` (cluster mode), and prints `SIGINT` for a missing signal: a process a signal ended is logged
/// with code `0` and that signal (seen on the real PM2: `kill -9` gives `code [0] via signal [SIGKILL]`, and its table
/// says `exit_code: 0`, as for a clean exit), a process that exited by itself with its code and `SIGINT`. So code `0`
/// with a signal other than `SIGINT` is that signal; `SIGINT` itself cannot be told from a clean exit. Older PM2 logged
/// `null` for the code.
enum PM2DaemonLog {
    /// How an instance last exited according to the log.
    struct Exit: Sendable, Equatable {
        var code: Int32?
        var signal: String?
    }

    /// The last exit of instance `pmId` of `name` in `text` (the log's tail), or `nil` when it has none.
    static func lastExit(of name: String, pmId: Int, in text: String) -> Exit? {
        let marker = "App [\(name):\(pmId)] exited with code ["
        for line in text.split(separator: "\n").reversed() {
            guard let start = line.firstRange(of: marker) else { continue }
            let rest = line[start.upperBound...]
            guard let close = rest.firstIndex(of: "]") else { return nil }
            let code = rest[..<close]
            let afterCode = rest[rest.index(after: close)...]
            var signal: String?
            if let open = afterCode.firstRange(of: "via signal ["), let end = afterCode[open.upperBound...].firstIndex(of: "]") {
                let text = afterCode[open.upperBound..<end]
                let valid = !text.isEmpty && text.count <= 16 && text.allSatisfy { $0.isUppercase || $0.isNumber }
                signal = valid ? String(text) : nil
            }
            if let number = Int32(code) {
                // `code || 0`: a signal's exit is logged as code 0 with that signal.
                if number == 0, let signal, signal != "SIGINT" { return Exit(code: nil, signal: signal) }
                return Exit(code: number, signal: nil)
            }
            guard code == "null" || code == "undefined" else { return nil }
            return Exit(code: nil, signal: signal)
        }
        return nil
    }
}
