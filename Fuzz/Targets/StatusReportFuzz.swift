import Shared

/// The controller's reading of `POST /v1/agents/{id}/status` (Controller/HTTP/AgentRoutes.swift:
/// `StatusReport(json: JSONValue.parse(bytes))`, Shared/Documents/AgentAPI.swift): never crash, refuse with a reason,
/// and every accepted report survives a round trip through its JSON form unchanged (what the agent sends is what the
/// controller stores).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStatusReport(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let report: StatusReport
    do {
        report = try StatusReport(json: JSONValue.parse(bytes))
    } catch {
        FuzzCheck.require(!"\(error)".isEmpty, "a status report refused without a reason")
        return 0
    }
    FuzzCheck.require(report.services.count <= StatusReport.maximumServices, "\(report.services.count) services accepted")
    let again = try? StatusReport(json: JSONValue.parse(Array(report.json.encoded())))
    FuzzCheck.require(again == report, "a status report changed through its encoding: \(report) became \(String(describing: again))")
    return 0
}
