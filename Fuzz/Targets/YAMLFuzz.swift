import Shared

#if canImport(Glibc)
import Glibc
#endif

/// The agent's YAML subset (Agent/Config/YAMLSubset.swift), which reads `agent.yaml`, and the configuration checks
/// behind it (`AgentConfig.load(from:)`: keys, ranges, validation): never crash, refuse with the line named, and whatever is accepted
/// is a JSON value that survives a round trip through JSON text (no NaN, no infinity, no invalid text).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzYAML(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let value: JSONValue
    do {
        value = try YAMLSubset.parse(text)
    } catch {
        FuzzCheck.require(error.line >= 1 && !error.message.isEmpty, "a refusal without a line or a reason: \(error)")
        return 0
    }
    let again = try? JSONValue.parse(Array(value.encoded()))
    FuzzCheck.require(
        again.map(canonical) == canonical(value),
        "the YAML value \(value) does not survive JSON text: \(String(describing: again))"
    )
    // The whole loading path of `ferry-agent run --config FILE`: JSON or YAML by content, keys, ranges, validation.
    let fd = open(configPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    FuzzCheck.require(fd >= 0, "cannot write \(configPath)")
    FuzzCheck.require(size == 0 || write(fd, data, size) == size, "short write of \(configPath)")
    close(fd)
    do {
        let config = try AgentConfig.load(from: configPath, environment: [:])
        FuzzCheck.require(!config.services.isEmpty, "a configuration without services was accepted")
    } catch {
        FuzzCheck.require("\(error)".contains(configPath), "a configuration refused without naming the file: \(error)")
    }
    return 0
}

/// A private file the configuration is written to (memory-backed where `/dev/shm` exists).
private let configPath: String = {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    // libFuzzer ends the process with exit(): the file goes then.
    atexit { _ = unlink(configPath) }
    return "\(base)/ferry-fuzz-agent-config-\(getpid()).yaml"
}()

/// `value` with whole numbers as integers, as `JSONValue.parse` reads `1.0` (YAML reads it as a double).
private func canonical(_ value: JSONValue) -> JSONValue {
    switch value {
    case .number(let number):
        if let integer = Int64(exactly: number) { return .integer(integer) }
        return value
    case .array(let items): return .array(items.map(canonical))
    case .object(let fields): return .object(fields.mapValues(canonical))
    default: return value
    }
}
