import Foundation
import Logging
import Shared

/// `serve`'s log handler: one line per message on standard error, `<time> <level> <label>: <metadata> <message>`.
///
/// Unlike swift-log's `StreamLogHandler`, setting metadata costs nothing: Hummingbird sets a request id on every
/// request's logger, and formatting it eagerly was a measurable share of a desired-state poll. Metadata is formatted
/// only when a line is actually written.
struct ControllerLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let time = Date().formatted(.iso8601)
        // One line per message, whatever its metadata holds (an agent's hostname, an error's text): control characters
        // and line feeds in it are escaped.
        let line = TerminalText.safe(
            "\(time) \(event.level) \(label):\(fields.isEmpty ? "" : " " + fields) \(event.message)",
            keepingLineBreaks: false
        )
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
