import ArgumentParser
import Foundation
import Shared
import Synchronization

/// `ferry-controller events [--service S] [--limit N] [--follow] [--json]`: what happened to releases and rollouts.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Print the event stream: publishes, waves, completions, halts, operator actions, agents' rollbacks and refusals.",
        discussion: """
            Prints the newest --limit events, oldest first. With --follow it then holds a connection to the controller \
            (GET /v1/events/stream, server-sent events with a keep-alive comment every 15 s, so load balancers do not \
            close it as idle) and prints each new event as it happens, until interrupted; a dropped connection is \
            opened again from the last event seen. With --json each event is one JSON object per line: {id, at, \
            service, serial, kind, message, agentId}.
            """
    )

    @OptionGroup var controller: ControllerOptions

    @Option(name: .long, help: "Only this service's events.")
    var service: String?

    @Option(name: .long, help: "How many past events to print first (0 to 1000).")
    var limit: Int = 20

    @Flag(name: .long, help: "Keep the connection open and print new events as they happen.")
    var follow = false

    @Flag(name: .long, help: "One JSON object per event and line.")
    var json = false

    func validate() throws {
        if let service, !Release.isValidServiceName(service) { throw ValidationError("--service \(service) is not a service name") }
        guard (0...1000).contains(limit) else { throw ValidationError("--limit must be between 0 and 1000") }
    }

    func run() async throws {
        let client = try controller.client()
        let filter = service.map { "service=\($0)" }
        var cursor: Int64 = 0
        if limit > 0 {
            let query = ([filter, "limit=\(limit)"].compactMap { $0 }).joined(separator: "&")
            let answer = try await client.getJSON("/v1/events?\(query)")
            let events = FleetDocument.array(answer.object?["events"]).reversed()
            for event in events {
                print(event)
                if case .integer(let id)? = event.object?["id"] { cursor = max(cursor, id) }
            }
        }
        guard follow else { return }
        if limit == 0 {
            // Only what happens from now on.
            let answer = try await client.getJSON("/v1/events?\(([filter, "limit=1"].compactMap { $0 }).joined(separator: "&"))")
            if case .integer(let id)? = FleetDocument.array(answer.object?["events"]).first?.object?["id"] { cursor = id }
        }
        try await Self.follow(client: client, service: service, after: cursor) { event in print(event) }
    }

    private func print(_ event: JSONValue) {
        Console.print(json ? String(decoding: event.encoded(), as: UTF8.self) : Self.line(event))
    }

    /// Follows the event stream from event id `after` for ever: each event goes to `onEvent`; a connection that ends
    /// or fails is opened again (after 1 s, growing to 10 s while it keeps failing) from the last event seen. Only an
    /// answer that will not change (401, 403, 400) or cancellation ends it.
    static func follow(
        client: OperatorClient,
        service: String?,
        after: Int64,
        onEvent: @escaping @Sendable (JSONValue) -> Void
    ) async throws {
        let cursor = EventCursor(after)
        var delay = Duration.seconds(1)
        while !Task.isCancelled {
            let query = ([service.map { "service=\($0)" }, "after=\(cursor.value)"].compactMap { $0 }).joined(separator: "&")
            do {
                try await client.followEvents("/v1/events/stream?\(query)") { event in
                    if case .integer(let id)? = event.object?["id"] { cursor.advance(to: id) }
                    onEvent(event)
                }
                delay = .seconds(1)
                Console.error("events: the controller ended the stream; reconnecting")
            } catch let error as ClientError {
                if case .api(_, _, let status, _, _) = error, [400, 401, 403, 404].contains(status) { throw error }
                Console.error("events: \(error); reconnecting in \(delay)")
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(10))
        }
    }

    /// One event as a line: time, service, serial, kind, message.
    static func line(_ event: JSONValue) -> String {
        let fields = event.object ?? [:]
        let text = FleetDocument.text
        let serial = fields["serial"].flatMap { $0 == .null ? nil : "serial \(text($0))" } ?? "-"
        return "\(text(fields["at"]))  \(text(fields["service"]))  \(serial)  \(text(fields["kind"]))  \(text(fields["message"]))"
    }
}

/// The id of the last event seen, shared with the stream's handler (which runs on the transfer's thread).
final class EventCursor: Sendable {
    private let state: Mutex<Int64>

    init(_ value: Int64) { state = Mutex(value) }

    var value: Int64 { state.withLock { $0 } }

    func advance(to id: Int64) { state.withLock { $0 = max($0, id) } }
}
