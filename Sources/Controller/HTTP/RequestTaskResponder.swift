import Hummingbird

/// Answers each routed request in a child task of its connection's task, so the memory its handling needs is given
/// back when the response is ready.
///
/// A Swift task keeps every slab its stack allocator ever took (1 KB each, one or more per async frame) until the
/// task ends. Hummingbird serves a connection in one task, so without this an idle kept-alive connection holds the
/// high-water mark of the deepest request it ever served — an enrolment through SQLKit, a publish — for as long as it
/// stays open. With heaptrack, 3,000 idle connections after one `/healthz` each held 54 MB of such slabs; at 10,000
/// enrolled, parked agents this was 40 % of the controller's memory (docs/benchmarks.md, fleet scale). A child task's
/// slabs are freed when it ends, so a connection's task keeps only the frames above this responder. The polls
/// `DesiredStatePollHandler` answers never reach it, so the hot path pays nothing for the extra task.
struct RequestTaskResponder<Base: HTTPResponder>: HTTPResponder {
    typealias Context = Base.Context
    let base: Base

    func respond(to request: Request, context: Context) async throws -> Response {
        // The context is not `Sendable`; it goes to the child while this task waits for it and never touches it.
        let handOver = HandOver(context: context)
        async let response = base.respond(to: request, context: handOver.context)
        return try await response
    }

    private struct HandOver: @unchecked Sendable {
        let context: Context
    }
}
