import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// An instance enrolled again with another fleet's trust root (`enroll --force --trust-root`): the roots the first
/// enrolment accepted and stored do not follow from the new pin, and are set aside (renamed, and said). Kept, they read
/// as a damaged chain and held every release back until the new fleet's own chain reached the stored version, with
/// nothing saying to remove the file. Roots that do follow from the new pin (the same fleet) stay: they keep a
/// controller from taking the agent back to an older root.
@Suite("Enrolment: stored trust roots of another pin", .serialized)
struct EnrollTrustRootTests {
    @Test(
        "stored roots are set aside only when they do not follow from the new pin",
        .timeLimit(.minutes(2)),
        arguments: [("another fleet's root 2", false), ("this fleet's root 2", true)]
    )
    func storedRoots(_ label: String, _ sameFleet: Bool) async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let fleetKey = try SigningKey.generate()
            let otherKey = try SigningKey.generate()
            let rootOne = try TestRoots.root(version: 1, rootKeys: [fleetKey], releaseKeys: [fleetKey], signers: [fleetKey])
            let rootFile = fleet.root.appendingPathComponent("root-1.json")
            try rootOne.encoded().write(to: rootFile)
            // What an earlier enrolment accepted: root 2 of this fleet, or of another whose keys are not this pin's.
            let key = sameFleet ? fleetKey : otherKey
            let storedTwo = try TestRoots.root(version: 2, rootKeys: [key], releaseKeys: [key], signers: [key])
            let state = fleet.root.appendingPathComponent("edge-1/state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            let chainFile = state.appendingPathComponent("trust-root.json")
            try JSONValue.object(["chain": .array([storedTwo.json])]).encoded().write(to: chainFile)

            let enrolled = try await fleet.runEnroll(name: "edge-1", caFile: nil, trustRoot: rootFile.path)
            #expect(enrolled.status == 0, "\(enrolled.stderr)")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: state.path).filter { $0.hasPrefix("trust-root.json.set-aside-") }
            if sameFleet {
                #expect(FileManager.default.fileExists(atPath: chainFile.path), "\(label): kept")
                #expect(leftovers.isEmpty)
                #expect(!enrolled.stdout.contains("set aside"), "\(enrolled.stdout)")
            } else {
                #expect(!FileManager.default.fileExists(atPath: chainFile.path), "\(label): set aside")
                #expect(leftovers.count == 1, "\(leftovers)")
                #expect(enrolled.stdout.contains("its trust roots do not follow from the root pinned now (version 1)"), "\(enrolled.stdout)")
            }
            // What the agent makes of its state dir at its next start: the pin's chain, with nothing holding releases back.
            let pinned = try TrustedRoot.pinning(rootOne)
            #expect(AgentTrust.storedChainFollows(from: pinned, file: chainFile.path))
        }
    }
}
