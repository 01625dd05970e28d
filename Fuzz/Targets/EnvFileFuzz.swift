import Shared

/// The one `.env` dialect (Shared/Formats/DotEnvFile.swift) an instance env file is read with, and the secrets mask the
/// agent builds from its values (Agent/Secrets/SecretMask.swift): never crash; every accepted name is an identifier;
/// a refusal names the file and the line; every value at least 6 bytes long is replaced by its `${NAME}` placeholder in a
/// text that contains it, and appears nowhere outside the placeholders once masked. What the agent masks of a file that
/// does not parse (`DotEnvFile.salvage`) never crashes, holds at most its limit, and holds every value a good file gives.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let salvaged = DotEnvFile.salvage(bytes)
    FuzzCheck.require(salvaged.count <= Limits.envEntries, "\(salvaged.count) values salvaged")
    let values: [String: String]
    do {
        values = try DotEnvFile.parse(bytes, path: "/fuzz/web.env")
    } catch {
        let message = "\(error)"
        let line = error.line ?? 0
        FuzzCheck.require(line >= 1 && message.hasPrefix("/fuzz/web.env:\(line): "), "a refusal that names no file or line: \(message)")
        return 0
    }
    FuzzCheck.require(values.count <= Limits.envEntries, "\(values.count) variables accepted")
    for (name, value) in values where !value.isEmpty {
        FuzzCheck.require(salvaged[name] == value, "the salvage of a good file lost \(name)")
    }
    for (name, value) in values {
        FuzzCheck.require(isIdentifier(name), "the name \(name.debugDescription) is not an identifier")
        guard value.utf8.count >= SecretMask.minimumLength else { continue }
        let text = "before<\(value)>after"
        let masked = SecretMask([[name: value]]).apply(text)
        // The placeholder `${NAME}` shows the name, which may contain the value (`GRlnlrG=GRlnlr`): the value must not
        // be left anywhere else.
        let outsidePlaceholders = masked.replacing("${\(name)}", with: "")
        FuzzCheck.require(masked.contains("${\(name)}"), "the value of \(name) was not replaced: \(masked.debugDescription)")
        FuzzCheck.require(!outsidePlaceholders.contains(value), "the value of \(name) survives its own mask: \(masked.debugDescription)")
        _ = SecretMask([values]).apply(text)
    }
    return 0
}

private func isIdentifier(_ name: String) -> Bool {
    guard let first = name.utf8.first, first == UInt8(ascii: "_") || isLetter(first) else { return false }
    return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || isLetter($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
}

private func isLetter(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
}
