/// How PM2 7.0.3 picks what runs a script (`Common.sink.resolveInterpreter`, `lib/API/interpreter.json`,
/// `lib/tools/isbinaryfile.js`) and the exec mode it defaults to (`Common.sink.determineExecMode`), reproduced so
/// Ferry records in a release exactly what `pm2 start` would run.
package enum PM2Interpreter {
    /// `lib/API/interpreter.json`: the interpreter for a file extension.
    package static let byExtension: [String: String] = [
        ".sh": "bash", ".py": "python", ".rb": "ruby", ".php": "php", ".pl": "perl", ".js": "node", ".coffee": "coffee",
        ".ls": "lsc", ".ts": "bun", ".tsx": "bun",
    ]

    /// Node's `path.extname`: the last `.` part of the last path component, unless the component starts with it.
    package static func extensionName(_ path: String) -> String {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        guard let dot = base.lastIndex(of: "."), dot != base.startIndex else { return "" }
        return String(base[dot...])
    }

    /// The interpreter PM2 chooses when none is given: by extension, else `none` for a binary file and node (PM2's
    /// `process.execPath`, recorded as `node`) for anything else.
    /// - Parameter head: the first bytes of the file (512 are enough), or `nil` when the file cannot be read (PM2 then
    ///   treats it as text).
    package static func implicit(forScript path: String, head: [UInt8]?) -> String {
        if let interpreter = byExtension[extensionName(path)] { return interpreter }
        return head.map(isBinary) == true ? "none" : "node"
    }

    /// PM2's `isbinaryfile` test over the first 512 bytes: a NUL byte, or more than 10 % bytes that are neither
    /// printable ASCII, common control characters nor valid UTF-8 sequences.
    package static func isBinary(_ bytes: [UInt8]) -> Bool {
        let total = min(bytes.count, 512)
        guard total > 0 else { return false }
        if total >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { return false }
        var suspicious = 0
        var index = 0
        while index < total {
            let byte = bytes[index]
            if byte == 0 { return true }
            if (byte < 7 || byte > 14) && (byte < 32 || byte > 127) {
                if byte > 193 && byte < 224 && index + 1 < total {
                    index += 1
                    if bytes[index] > 127 && bytes[index] < 192 {
                        index += 1
                        continue
                    }
                } else if byte > 223 && byte < 240 && index + 2 < total {
                    index += 1
                    if bytes[index] > 127 && bytes[index] < 192 && bytes[index + 1] > 127 && bytes[index + 1] < 192 {
                        index += 2
                        continue
                    }
                }
                suspicious += 1
                if index > 32 && suspicious * 100 > 10 * total { return true }
            }
            index += 1
        }
        return suspicious * 100 > 10 * total
    }

    /// The program a `#!` line names, with `/usr/bin/env` (and its `-S`) looked through: `#!/usr/bin/env python3` →
    /// `python3`, `#!/bin/bash -e` → `bash`. `nil` without a shebang.
    package static func shebangProgram(_ head: [UInt8]) -> String? {
        guard head.count > 2, head[0] == UInt8(ascii: "#"), head[1] == UInt8(ascii: "!") else { return nil }
        let line = head.dropFirst(2).prefix { $0 != 0x0A && $0 != 0x0D }
        var words = String(decoding: line, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard !words.isEmpty else { return nil }
        if words[0].hasSuffix("/env") {
            words.removeFirst()
            while let first = words.first, first.hasPrefix("-") || first.contains("=") { words.removeFirst() }
        }
        return words.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 }
    }

    /// Whether an interpreter name is node (PM2's test for the cluster-mode default: `node`, a path ending in `node`,
    /// or bun).
    package static func isNodeLike(_ interpreter: String) -> Bool {
        let base = interpreter.split(separator: "/").last.map(String.init) ?? interpreter
        return base.hasSuffix("node") || base.hasSuffix("bun")
    }

    /// PM2's default exec mode: cluster when the app sets `instances` (≥ 1, 0 or -1) and runs under node or bun,
    /// else fork.
    package static func defaultExecMode(instances: Int64?, interpreter: String) -> ExecMode {
        guard let instances, instances >= 1 || instances == 0 || instances == -1, isNodeLike(interpreter) else { return .fork }
        return .cluster
    }
}
