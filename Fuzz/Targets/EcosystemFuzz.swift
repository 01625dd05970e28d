import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Ecosystem normalisation as `ferry-controller publish` does it (Controller/Operator/EcosystemNormalizer.swift through
/// `ReleaseComposer.compose`): the evaluated ecosystem file against a fixed artifact tree and a fixed PATH. The input is
/// read as JSON (what `node` hands over for a `.config.js`, or a `.json` file) or, when it is not JSON, as a YAML
/// ecosystem file (`YAMLDocument`, over Yams). Never crash; a refusal lists problems that each say something; an accepted file makes a
/// release that agents accept byte for byte (`Release.decode` of its payload gives it back).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEcosystem(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let document: JSONValue
    if let json = try? JSONValue.parse(bytes) {
        document = json
    } else {
        do {
            document = try YAMLDocument.parse(String(decoding: bytes, as: UTF8.self), source: "ecosystem.yaml")
        } catch {
            FuzzCheck.require("\(error)".contains("ecosystem.yaml"), "a YAML refusal that does not name the file: \(error)")
            return 0
        }
    }
    for environmentName in [nil, "production"] as [String?] {
        compose(document, environmentName: environmentName)
    }
    return 0
}

private enum Fixture {
    static let node: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 56)
    static let programs = ["node": "/usr/bin/node", "python3": "/usr/bin/python3", "bash": "/bin/bash", "sh": "/bin/sh", "npm": "/usr/bin/npm"]
    static let tree = ArtifactTree(entries: [
        "server.js": .init(kind: .file, mode: 0o644, head: Array("const http = require('http');\n".utf8)),
        "worker.mjs": .init(kind: .file, mode: 0o644, head: Array("import x from 'y';\n".utf8)),
        "bin": .init(kind: .directory, mode: 0o755, head: []),
        "bin/www": .init(kind: .file, mode: 0o755, head: Array("#!/usr/bin/env node\nrequire('../server');\n".utf8)),
        "bin/run.sh": .init(kind: .file, mode: 0o755, head: Array("#!/bin/sh\nexec node server.js\n".utf8)),
        "app.py": .init(kind: .file, mode: 0o644, head: Array("print('hi')\n".utf8)),
        "native": .init(kind: .file, mode: 0o755, head: node),
        "link.js": .init(kind: .symlink(target: "server.js"), mode: 0o777, head: []),
        "lib": .init(kind: .directory, mode: 0o755, head: []),
        "lib/index.js": .init(kind: .file, mode: 0o644, head: Array("module.exports = {};\n".utf8)),
    ])
    static let artifact: ArtifactReference = {
        let digest = SHA256.hash(Array("artifact".utf8))
        return ArtifactReference(url: "/v1/artifacts/\(digest.hex)", sha256: digest, size: 1024)
    }()
}

private func compose(_ document: JSONValue, environmentName: String?) {
    let input = ReleaseComposer.Input(
        service: "web",
        version: "1.0.0",
        serial: 7,
        artifact: Fixture.artifact,
        ecosystem: EcosystemReader.Evaluation(document: document, environment: ["PATH": "/usr/bin:/bin", "HOME": "/home/ci"]),
        releaseRoot: "/build/web",
        artifactTree: Fixture.tree,
        environmentName: environmentName,
        healthURL: "http://127.0.0.1:3000/healthz",
        createdAt: Date(timeIntervalSince1970: 1_799_539_200),
        expiresIn: .seconds(86_400)
    )
    let output: ReleaseComposer.Output
    do {
        output = try ReleaseComposer.compose(input, which: { Fixture.programs[$0] })
    } catch let error as ComposeError {
        if case .problems(let errors, _) = error {
            FuzzCheck.require(!errors.isEmpty, "a refusal without a problem")
            for problem in errors { FuzzCheck.require(!problem.message.isEmpty, "a problem without a message at \(problem.field)") }
        }
        return
    } catch {
        FuzzCheck.require(false, "compose threw something other than a ComposeError: \(error)")
        return
    }
    let again = try? Release.decode(output.release.payload())
    FuzzCheck.require(again == output.release, "the composed release does not survive its payload: \(output.release)")
}
