import Foundation
import TestSupport

/// Two network namespaces of the test's own joined by a veth pair — the database's side (`databaseNamespace`,
/// `databaseAddress`) and a controller's (`controllerNamespace`) — so that a test can cut that controller off the
/// database for real: `cut()` takes the database's end of the link down, the controller's packets are then dropped
/// without a word (no reset, no error: its end still looks up), and the database server finds out only through its
/// TCP keepalives. Nothing of the machine's own network is touched: the addresses (192.0.2.0/24, TEST-NET-1, reserved
/// for documentation) exist only inside the two namespaces, which `remove()` deletes with the link.
final class PrivateNetwork {
    let databaseNamespace: String
    let controllerNamespace: String
    let databaseAddress = "192.0.2.1"
    let controllerAddress = "192.0.2.2"
    private let databaseLink: String
    private let controllerLink: String

    static let ip = "/usr/sbin/ip"

    /// Why namespaces cannot be made here (not root, no `ip`), or `nil`.
    static var unavailableReason: String? {
        guard geteuid() == 0 else { return "making network namespaces needs root" }
        guard FileManager.default.isExecutableFile(atPath: ip) else { return "no \(ip) (Debian's iproute2)" }
        return nil
    }

    /// Makes both namespaces and the link; removes what it made when a step fails.
    init() throws {
        let tag = String(UInt32.random(in: 0...0xFFFF_FFFF), radix: 36)
        databaseNamespace = "ferry-db-\(tag)"
        controllerNamespace = "ferry-ctl-\(tag)"
        databaseLink = "fdb\(tag)".prefix(15).description
        controllerLink = "fct\(tag)".prefix(15).description
        do {
            for namespace in [databaseNamespace, controllerNamespace] {
                try Self.run(["netns", "add", namespace])
                try Self.run(["-n", namespace, "link", "set", "lo", "up"])
            }
            try Self.run(["link", "add", databaseLink, "type", "veth", "peer", "name", controllerLink])
            try Self.run(["link", "set", databaseLink, "netns", databaseNamespace])
            try Self.run(["link", "set", controllerLink, "netns", controllerNamespace])
            try Self.run(["-n", databaseNamespace, "addr", "add", "\(databaseAddress)/24", "dev", databaseLink])
            try Self.run(["-n", controllerNamespace, "addr", "add", "\(controllerAddress)/24", "dev", controllerLink])
            try Self.run(["-n", databaseNamespace, "link", "set", databaseLink, "up"])
            try Self.run(["-n", controllerNamespace, "link", "set", controllerLink, "up"])
        } catch {
            remove()
            throw error
        }
    }

    /// The command prefix that runs a program inside `namespace`.
    func inside(_ namespace: String) -> [String] { [Self.ip, "netns", "exec", namespace] }

    /// Cuts the link: the database's end goes down.
    func cut() throws { try Self.run(["-n", databaseNamespace, "link", "set", databaseLink, "down"]) }

    /// Joins it again.
    func heal() throws { try Self.run(["-n", databaseNamespace, "link", "set", databaseLink, "up"]) }

    /// Deletes both namespaces (and with them the link). Processes still inside keep theirs until they exit: stop
    /// them first.
    func remove() {
        for namespace in [databaseNamespace, controllerNamespace] { _ = try? Self.run(["netns", "delete", namespace]) }
    }

    private static func run(_ arguments: [String]) throws {
        let result = try Command.run(ip, arguments)
        guard result.status == 0 else { throw HarnessError("ip \(arguments.joined(separator: " ")): \(result.stderr)") }
    }
}
