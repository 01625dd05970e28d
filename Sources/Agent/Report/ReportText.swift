/// The free text of reports and of the agent's state: control characters spaced, cut to a number of UTF-8 bytes on a
/// character boundary (`StatusReportBuilder`, `ServiceState.storedText`). On its own, without the report's types, so the
/// state's fuzz target compiles it too.
enum ReportText {
    /// Free text as the report carries it (a message, a failure reason, a trust root problem): control characters other
    /// than newline and tab (a NUL or an escape sequence in a tool's error output) become spaces, and it is clipped to
    /// `maximumBytes` (the controller allows 2,048). The controller refuses a NUL, which PostgreSQL cannot store, and
    /// then the whole report: one odd character in an error must not silence the agent.
    static func freeText(_ text: String, maximumBytes: Int = 2000) -> String {
        clipped(spacingControls(in: text, keeping: ["\n", "\t"]), toBytes: maximumBytes)
    }

    /// `text` with line breaks and control characters other than tab replaced by spaces.
    static func oneLine(_ text: String) -> String {
        spacingControls(in: text, keeping: ["\t"])
    }

    /// `text` with each control character (C0 and DEL) but those `kept` replaced by a space.
    private static func spacingControls(in text: String, keeping kept: Set<Unicode.Scalar>) -> String {
        let isControl = { (scalar: Unicode.Scalar) in (scalar.value < 0x20 || scalar.value == 0x7f) && !kept.contains(scalar) }
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.map { isControl($0) ? " " : $0 }))
    }

    /// At most `limit` UTF-8 bytes of `text`, cut on a character boundary: the controller's limits count bytes, and
    /// one over-long field would get the whole report refused.
    static func clipped(_ text: String, toBytes limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var result = ""
        var bytes = 0
        for character in text {
            bytes += character.utf8.count
            if bytes > limit { break }
            result.append(character)
        }
        return result
    }
}
