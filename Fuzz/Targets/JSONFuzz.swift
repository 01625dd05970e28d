import Shared

/// `JSONValue.parse` (Shared/Documents/JSONParser.swift), which every document an agent or the controller reads goes
/// through: never crashes, and whatever it accepts survives a round trip through `encoded()` unchanged.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let value: JSONValue
    do {
        value = try JSONValue.parse(bytes)
    } catch {
        // Every refusal names what was wrong.
        FuzzCheck.require(!"\(error)".isEmpty, "an empty error message")
        return 0
    }
    let encoded = Array(value.encoded())
    let again: JSONValue
    do {
        again = try JSONValue.parse(encoded)
    } catch {
        FuzzCheck.require(false, "the encoding of an accepted document is refused: \(error)")
        return 0
    }
    FuzzCheck.require(again == value, "the round trip changed the value: \(value) became \(again)")
    return 0
}
