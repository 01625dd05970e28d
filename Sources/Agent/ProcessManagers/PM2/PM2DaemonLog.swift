/// Reading PM2's daemon log (`$PM2_HOME/pm2.log`) for what `jlist` does not keep.
///
/// PM2 7 logs every exit as `App [<name>:<pm_id>] exited with code [<code>] via signal [<signal>]` (lib/God.js,
/// `handleExit`), and keeps only the code in its table. The signal in that line is meaningful only when the code is
/// `null` (a process a signal ended); with a numeric code PM2 prints `SIGINT` whatever happened.
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
            if let number = Int32(code) { return Exit(code: number, signal: nil) }
            guard code == "null" || code == "undefined" else { return nil }
            guard let open = afterCode.firstRange(of: "via signal ["), let end = afterCode[open.upperBound...].firstIndex(of: "]") else {
                return Exit(code: nil, signal: nil)
            }
            let signal = afterCode[open.upperBound..<end]
            let valid = !signal.isEmpty && signal.count <= 16 && signal.allSatisfy { $0.isUppercase || $0.isNumber }
            return Exit(code: nil, signal: valid ? String(signal) : nil)
        }
        return nil
    }
}
