import Shared

/// Which process manager runs this instance's apps, remembered in the state directory (`AgentLayout.processManagerFile`).
///
/// `auto` used to be decided again at every start: `pm2` installed on a host whose apps ran under the builtin supervisor
/// (an `npm i -g pm2` for something else), and the next agent start took PM2's empty table for the truth, stopped the
/// supervisor's processes as a dead daemon's leftovers (the daemon started them again) and started every app under PM2
/// as well: two copies fighting over their ports. `pm2` gone from PATH for a moment (an npm upgrade) did the reverse.
/// Now the agent that starts (not a command that only looks) records the manager it runs the apps under, and `auto`
/// follows the record: a host keeps its process manager until the operator names another one in the config.
enum ProcessManagerChoice {
    struct Refusal: Error, CustomStringConvertible {
        var description: String
    }

    /// Whether the apps run under PM2. `pm2Found`: `pm2Path` is set, or `pm2` is on PATH. `records`: the starting
    /// agent (holding the state directory's lock), which writes the choice down; a command that only looks does not.
    /// - Throws: `Refusal` when `auto` finds the record naming PM2 and no `pm2` (starting the apps under the builtin
    ///   supervisor would run them twice), or a record it cannot read.
    static func usesPM2(_ kind: ProcessManagerKind, pm2Found: Bool, layout: AgentLayout, records: Bool) throws -> Bool {
        let path = layout.processManagerFile
        // A process manager the config names wins, and replaces a record that cannot be read: that is the way out of one.
        let recorded = kind == .auto ? try record(at: path) : try? record(at: path)
        let chosen: ProcessManagerKind
        switch (kind, recorded) {
        case (.pm2, _), (.builtin, _): chosen = kind
        case (.auto, .pm2?):
            guard pm2Found else {
                throw Refusal(
                    description: "the apps run under PM2 (recorded in \(path)) but pm2 is not on PATH: the builtin supervisor would start them a "
                        + "second time. Put pm2 back (or set pm2Path), or stop them and set processManager: builtin in the agent config"
                )
            }
            chosen = .pm2
        case (.auto, _?): chosen = .builtin
        case (.auto, nil): chosen = pm2Found ? .pm2 : .builtin
        }
        if records, recorded != chosen {
            do {
                try AtomicFile.write(Array("\(chosen.rawValue)\n".utf8), to: path, mode: 0o600)
            } catch {
                throw Refusal(description: "cannot record the process manager in \(path): \(error)")
            }
        }
        return chosen == .pm2
    }

    /// The process manager recorded at `path`, `nil` when there is no record.
    private static func record(at path: String) throws(Refusal) -> ProcessManagerKind? {
        let bytes: [UInt8]?
        do {
            bytes = try SmallFile.read(path, limit: 64)
        } catch {
            throw Refusal(description: "cannot read \(path) (which process manager runs the apps): \(error)")
        }
        guard let bytes else { return nil }
        let words = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard words.count == 1, let kind = ProcessManagerKind(rawValue: String(words[0])), kind != .auto else {
            throw Refusal(description: "\(path) does not name pm2 or builtin: remove it, or set processManager in the agent config")
        }
        return kind
    }
}
