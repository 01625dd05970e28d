import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The files under `deploy/`: the example configuration loads as the agent loads it, the install script plans the
/// right steps without changing anything and refuses bad flags, the systemd units carry the hardening the design
/// relies on and pass `systemd-analyze verify`.
@Suite("Deploy files")
struct DeployFilesTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let deploy = repositoryRoot.appendingPathComponent("deploy")
    static let installScript = deploy.appendingPathComponent("install-agent.sh").path
    static let agentUnit = deploy.appendingPathComponent("systemd/ferry-agent.service").path
    static let controllerUnit = deploy.appendingPathComponent("systemd/ferry-controller.service").path
    static let token = "fyt_0123456789abcdef0123456789abcdef0123456789abcdef"

    // MARK: - Example configuration

    @Test func exampleConfigurationLoadsWithEveryKey() throws {
        let path = Self.deploy.appendingPathComponent("agent.example.yaml").path
        // No environment: the file alone must be valid (FERRY_* variables of the test runner must not mask a problem).
        let config = try AgentConfig.load(from: path, environment: [:])
        #expect(config.controllerURL == "https://ferry.internal.example:8443")
        #expect(config.services == ["api", "worker"])
        #expect(config.trustedKeys == ["/etc/ferry/keys/alice.pub", "/etc/ferry/keys/bob.pub"])
        #expect(config.threshold == 2)
        #expect(config.stateDir == "/var/lib/ferry")
        #expect(config.tokenFile == "/var/lib/ferry/agent.token")
        #expect(config.envDir == "/etc/ferry/env")
        #expect(config.processManager == .pm2)
        #expect(config.pm2Home == "/var/lib/ferry/.pm2")
        #expect(config.pm2Path == "/usr/bin/pm2")
        #expect(config.caFile == "/etc/ferry/ca.pem")
        #expect(config.machineIdentity == .ec2)

        // "Every key": the example's keys are exactly the keys the agent writes when all optional ones are set. The
        // machine check's file and URL are written only when they differ from their defaults (which the example shows).
        var everyKey = config
        everyKey.machineIDFile = "/run/host/machine-id"
        everyKey.instanceMetadataURL = "http://127.0.0.1:9"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard case .object(let exampleFields) = try YAMLSubset.parse(text), case .object(let configFields) = everyKey.json else {
            Issue.record("the example or the configuration is not a mapping")
            return
        }
        #expect(Set(exampleFields.keys) == Set(configFields.keys))
    }

    // MARK: - Shell syntax

    @Test func installScriptParses() async throws {
        let result = try await Command.run("bash", ["-n", Self.installScript])
        #expect(result.status == 0, "bash -n: \(result.stderr)")
    }

    /// The bootstrap script embedded in the cloud-init user data (a block scalar under its `content: |`).
    static func bootstrapScript() throws -> [Substring] {
        let userData = try String(
            contentsOf: Self.deploy.appendingPathComponent("cloud-init/agent-user-data.yaml"),
            encoding: .utf8
        )
        #expect(userData.hasPrefix("#cloud-config\n"))
        let lines = userData.split(separator: "\n", omittingEmptySubsequences: false)
        let start = try #require(lines.firstIndex { $0.hasSuffix("path: /var/lib/cloud/scripts/per-boot/ferry-bootstrap") })
        let content = try #require(lines[start...].firstIndex { $0.trimmingCharacters(in: .whitespaces) == "content: |" })
        var script: [Substring] = []
        for line in lines[(content + 1)...] {
            guard line.isEmpty || line.hasPrefix("      ") else { break }
            script.append(line.dropFirst(min(6, line.count)))
        }
        return script
    }

    @Test func cloudInitBootstrapScriptParses() async throws {
        let script = try Self.bootstrapScript()
        #expect(script.first == "#!/usr/bin/env bash")
        #expect(script.contains { $0.contains("install-agent.sh") })
        // An enrolment copied in an image is found at boot and replaced (docs/agent.md, "A copy of an enrolled machine").
        #expect(script.contains { $0.contains("/usr/local/bin/ferry-agent check-machine --config /etc/ferry/agent.json || machine=$?") })
        #expect(script.contains { $0.contains("if [ \"$machine\" -ne \(MachineCheck.copyExitStatus) ]; then") })
        #expect(script.contains { $0.contains("--machine-identity ec2") })
        try await TestPaths.withTemporaryDirectory("ferry-deploy") { directory in
            let file = directory.appendingPathComponent("ferry-bootstrap").path
            try script.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let result = try await Command.run("bash", ["-n", file])
            #expect(result.status == 0, "bash -n: \(result.stderr)")
        }
    }

    // MARK: - The bootstrap at a later boot

    struct BootCase: Sendable, CustomStringConvertible {
        var description: String
        /// What `ferry-agent check-machine` exits with (`nil`: no agent installed, not run).
        var checkMachine: Int32?
        /// Files under the fake root before the boot (relative path → content).
        var existing: [String: String]
        /// Whether the enrolment is moved aside and the bootstrap goes on to enrol afresh (it then stops at the
        /// download, which the test's `curl` refuses).
        var enrolsAfresh: Bool
        /// The `systemctl` calls, in order.
        var systemctl: [String]
    }

    static let enrolment: [String: String] = [
        "etc/ferry/agent.json": #"{"agentID":"agt_original"}"# + "\n",
        "var/lib/ferry/agent.token": "fyt_the_original_instances_token\n",
        "var/lib/ferry/machine.json": #"{"source":"ec2","id":"i-0original"}"# + "\n",
    ]

    static let bootCases: [BootCase] = [
        BootCase(
            description: "this instance's own enrolment: the unit is enabled, nothing moves",
            checkMachine: 0,
            existing: enrolment,
            enrolsAfresh: false,
            systemctl: ["enable --now ferry-agent.service"]
        ),
        BootCase(
            description: "cannot tell (the metadata service refused): nothing moves",
            checkMachine: 1,
            existing: enrolment,
            enrolsAfresh: false,
            systemctl: ["enable --now ferry-agent.service"]
        ),
        BootCase(
            description: "another instance's enrolment (an image baked after enrolment): moved aside, enrolled afresh",
            checkMachine: MachineCheck.copyExitStatus,
            existing: enrolment,
            enrolsAfresh: true,
            systemctl: ["stop ferry-agent.service"]
        ),
        BootCase(
            description: "a copy with only its configuration left: that is moved, the missing files are no error",
            checkMachine: MachineCheck.copyExitStatus,
            existing: ["etc/ferry/agent.json": enrolment["etc/ferry/agent.json"]!],
            enrolsAfresh: true,
            systemctl: ["stop ferry-agent.service"]
        ),
        BootCase(description: "first boot: nothing enrolled yet", checkMachine: nil, existing: [:], enrolsAfresh: true, systemctl: []),
    ]

    /// The bootstrap script as cloud-init runs it at every boot, on a fake root: its absolute paths point into a
    /// temporary directory, `systemctl` and `curl` are stand-ins on `PATH` (the download fails, which ends the run before
    /// anything reaches the network), and `ferry-agent check-machine` exits as the case says. A copied enrolment is
    /// moved aside whole (not deleted), and only then is this instance enrolled afresh.
    @Test(arguments: bootCases)
    func aLaterBootKeepsOrMovesTheEnrolment(_ testCase: BootCase) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-boot") { directory in
            let root = directory.appendingPathComponent("root").path
            let bin = directory.appendingPathComponent("bin").path
            let log = directory.appendingPathComponent("log").path
            let fileManager = FileManager.default
            for path in ["etc/ferry-bootstrap/keys", "etc/ferry", "var/lib/ferry", "usr/local/bin", "root"] {
                try fileManager.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true)
            }
            try fileManager.createDirectory(atPath: bin, withIntermediateDirectories: true)
            try fileManager.createDirectory(atPath: log, withIntermediateDirectories: true)
            func write(_ path: String, _ text: String, executable: Bool = false) throws {
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                if executable { try fileManager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path) }
            }
            try write(
                root + "/etc/ferry-bootstrap/bootstrap.env",
                """
                FERRY_BUNDLE_URL="http://127.0.0.1:9/bundle.tar.gz"
                FERRY_BUNDLE_SHA256="\(String(repeating: "0", count: 64))"
                FERRY_CONTROLLER_URL="https://127.0.0.1:9"
                FERRY_ENROLL_TOKEN_PARAMETER="/ferry/test/enroll-token"
                FERRY_SERVICES="web"
                FERRY_THRESHOLD="1"
                FERRY_PROCESS_MANAGER="builtin"

                """
            )
            for (path, content) in testCase.existing { try write(root + "/" + path, content) }
            if let status = testCase.checkMachine {
                try write(root + "/usr/local/bin/ferry-agent", "#!/bin/sh\necho \"$*\" >>\(log)/ferry-agent\nexit \(status)\n", executable: true)
            }
            try write(bin + "/systemctl", "#!/bin/sh\necho \"$*\" >>\(log)/systemctl\n", executable: true)
            try write(bin + "/curl", "#!/bin/sh\necho \"$*\" >>\(log)/curl\necho 'curl: (7) refused by the test' >&2\nexit 7\n", executable: true)

            // Every absolute path the script uses, moved under the fake root.
            var script = try Self.bootstrapScript().joined(separator: "\n")
            for path in ["/etc/ferry", "/usr/local/bin/ferry-agent", "/var/lib/ferry", "/root/ferry-bootstrap"] {
                #expect(script.contains(path), "the script uses \(path)")
                script = script.replacingOccurrences(of: path, with: root + path)
            }
            let file = directory.appendingPathComponent("ferry-bootstrap").path
            try write(file, script, executable: true)
            let environment = [
                "PATH": bin + ":/usr/bin:/bin", "HOME": root + "/root", "AWS_REGION": "eu-west-1", "LC_ALL": "C",
            ]
            let result = try await Command.run("bash", [file], environment: environment)
            func logged(_ name: String) -> [String] {
                ((try? String(contentsOfFile: log + "/" + name, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            #expect(logged("systemctl") == testCase.systemctl, "\(result.stdout)\(result.stderr)")
            #expect(logged("ferry-agent") == (testCase.checkMachine == nil ? [] : ["check-machine --config \(root)/etc/ferry/agent.json"]))
            let asides = try fileManager.contentsOfDirectory(atPath: root + "/var/lib").filter { $0.hasPrefix("ferry-copied-enrolment.") }
            if testCase.enrolsAfresh {
                // It went on to enrol: the download is the next step, refused here, and the run stops with curl's status.
                #expect(result.status == 7, "\(result.stdout)\(result.stderr)")
                #expect(result.stdout.contains("ferry-bootstrap: downloading the agent bundle"))
                #expect(logged("curl").count == 1)
                let moved = testCase.checkMachine == MachineCheck.copyExitStatus
                #expect(asides.count == (moved ? 1 : 0), "\(asides)")
                if moved, let aside = asides.first {
                    let asidePath = root + "/var/lib/" + aside
                    #expect(result.stdout.contains("moving it to \(asidePath) and enrolling afresh"), "\(result.stdout)")
                    let mode = try fileManager.attributesOfItem(atPath: asidePath)[.posixPermissions] as? Int
                    #expect(mode == 0o700, "the copied token is kept where only root reads it")
                    for (path, content) in testCase.existing {
                        let name = (path as NSString).lastPathComponent
                        #expect(!fileManager.fileExists(atPath: root + "/" + path), "\(path) moved")
                        #expect((try? String(contentsOfFile: asidePath + "/" + name, encoding: .utf8)) == content, "\(name) kept whole")
                    }
                    #expect(try fileManager.contentsOfDirectory(atPath: asidePath).count == testCase.existing.count)
                }
            } else {
                #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
                #expect(result.stdout.contains("ferry-bootstrap: already enrolled; making sure the agent is enabled"))
                #expect(logged("curl").isEmpty)
                #expect(asides.isEmpty)
                for (path, content) in testCase.existing {
                    #expect((try? String(contentsOfFile: root + "/" + path, encoding: .utf8)) == content, "\(path) untouched")
                }
            }
            // The bootstrap's work directory is removed on the way out, whatever happened.
            #expect(try fileManager.contentsOfDirectory(atPath: root + "/root").isEmpty)
        }
    }

    // MARK: - install-agent.sh --dry-run

    struct DryRunCase: Sendable, CustomStringConvertible {
        var description: String
        /// Files created under the fake root before the run (relative path → content).
        var existing: [String: String] = [:]
        /// Arguments added to the sample ones (WORK stands for the directory of the inputs).
        var extraArguments: [String] = []
        /// Flags removed from the sample ones, with their values.
        var withoutFlags: [String] = []
        var passToken = true
        /// Lines of stdout expected (ROOT stands for the fake root).
        var expectedLines: [String]
        /// Substrings that must appear in stdout.
        var present: [String] = []
        /// Substrings that must not appear in stdout.
        var absent: [String] = []
    }

    static let enrolledHost: [String: String] = [
        "etc/ferry/agent.json": "{}\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\nferry:x:999:999:Ferry agent:/var/lib/ferry:/usr/sbin/nologin\n",
        "etc/group": "root:x:0:\nferry:x:999:\n",
    ]

    static let dryRunCases: [DryRunCase] = [
        DryRunCase(
            description: "fresh host: user, directories, binary, keys, enrollment, unit",
            expectedLines: [
                "+ groupadd --root ROOT --system ferry",
                "+ install -d -o ferry -g ferry -m 0700 ROOT/var/lib/ferry",
                "+ install -d -o root -g ferry -m 0750 ROOT/etc/ferry/keys",
                "+ install -o root -g root -m 0755 WORK/ferry-agent ROOT/usr/local/bin/ferry-agent",
                "+ install -o root -g ferry -m 0640 WORK/alice.pub ROOT/etc/ferry/keys/alice.pub",
                "+ ROOT/usr/local/bin/ferry-agent enroll --controller https://ferry.example:8443 --config ROOT/etc/ferry/agent.json"
                    + " --state-dir ROOT/var/lib/ferry --env-dir ROOT/etc/ferry/env --threshold 2 --process-manager builtin"
                    + " --service web --service api --trusted-key ROOT/etc/ferry/keys/alice.pub"
                    + " --trusted-key ROOT/etc/ferry/keys/bob.pub --poll-seconds 5 --token-file - <redacted token on stdin>",
                "+ chown ferry:ferry ROOT/var/lib/ferry/agent.token ROOT/var/lib/ferry/trust-pin.json",
                "+ chown ferry:ferry ROOT/var/lib/ferry/machine.json",
                "+ install -o root -g root -m 0644 DEPLOY/systemd/ferry-agent.service ROOT/etc/systemd/system/ferry-agent.service",
                "+ systemctl --root=ROOT enable ferry-agent.service",
                "install-agent: done (dry run: nothing was changed)",
            ],
            absent: ["skip: user ferry exists", "--force", "--replace", "ca.pem", "root.json", "--trust-root"]
        ),
        DryRunCase(
            description: "enrolled host: no user, no enrollment, no token needed",
            existing: enrolledHost,
            passToken: false,
            expectedLines: [
                "install-agent: skip: user ferry exists",
                "install-agent: skip: group ferry exists",
                "install-agent: skip: ROOT/etc/ferry/agent.json exists, this instance is enrolled (--replace, with an operator token, enrolls it again)",
                "+ systemctl --root=ROOT enable ferry-agent.service",
            ],
            absent: [" enroll ", "useradd", "groupadd", "chown"]
        ),
        DryRunCase(
            description: "enrolled host with --force: enrolls again",
            existing: enrolledHost,
            extraArguments: ["--force"],
            expectedLines: ["install-agent: skip: user ferry exists"],
            present: [
                " enroll --controller https://ferry.example:8443 --config ROOT/etc/ferry/agent.json ",
                " --force --token-file - <redacted token on stdin>\n",
            ],
            absent: ["useradd", "skip: ROOT/etc/ferry/agent.json exists"]
        ),
        DryRunCase(
            // The controller refuses an enroll token for a name it has (409 agent_exists): replacing takes an operator token.
            description: "enrolled host with --replace: enrolls again, replacing the controller's agent of that name",
            existing: enrolledHost,
            extraArguments: ["--replace"],
            expectedLines: ["install-agent: skip: user ferry exists"],
            present: [
                " enroll --controller https://ferry.example:8443 --config ROOT/etc/ferry/agent.json ",
                " --poll-seconds 5 --force --replace --token-file - <redacted token on stdin>\n",
            ],
            absent: ["useradd", "skip: ROOT/etc/ferry/agent.json exists"]
        ),
        DryRunCase(
            // The agent runs as ferry with ProtectHome=yes: a CA file under /root or /home, or root's alone, fails every poll.
            description: "--ca-file is copied to /etc/ferry/ca.pem, and enroll is given the copy",
            extraArguments: ["--ca-file", "WORK/ca.pem"],
            expectedLines: ["+ install -o root -g ferry -m 0640 WORK/ca.pem ROOT/etc/ferry/ca.pem"],
            present: [" --ca-file ROOT/etc/ferry/ca.pem --poll-seconds 5 --token-file - <redacted token on stdin>\n"],
            absent: ["--ca-file WORK/ca.pem"]
        ),
        DryRunCase(
            description: "--trust-root instead of keys: copied to /etc/ferry/root.json and pinned, no keys, no threshold",
            extraArguments: ["--trust-root", "WORK/root.json"],
            withoutFlags: ["--trusted-key", "--threshold"],
            expectedLines: [
                "+ install -o root -g ferry -m 0640 WORK/root.json ROOT/etc/ferry/root.json",
                "+ ROOT/usr/local/bin/ferry-agent enroll --controller https://ferry.example:8443 --config ROOT/etc/ferry/agent.json"
                    + " --state-dir ROOT/var/lib/ferry --env-dir ROOT/etc/ferry/env --process-manager builtin"
                    + " --service web --service api --trust-root ROOT/etc/ferry/root.json --poll-seconds 5"
                    + " --token-file - <redacted token on stdin>",
            ],
            absent: ["--trusted-key", "--threshold", "ROOT/etc/ferry/keys/"]
        ),
        DryRunCase(
            // The enrolment pinned the root file's digest: the agent refuses a root file replaced under it.
            description: "--trust-root on an enrolled host: the pinned root is not replaced",
            existing: enrolledHost,
            extraArguments: ["--trust-root", "WORK/root.json"],
            withoutFlags: ["--trusted-key", "--threshold"],
            passToken: false,
            expectedLines: [
                "install-agent: skip: ROOT/etc/ferry/root.json, this instance is enrolled with its pinned root (--force or --replace pins another)"
            ],
            absent: [" enroll ", "WORK/root.json"]
        ),
        DryRunCase(
            // Until the new enrolment succeeds the pinned root stays: it is set aside first, put back if enroll fails
            // (the agent refuses to start with a root file other than the one its pin names), dropped once it succeeded.
            description: "--trust-root with --force on an enrolled host: the pinned root is kept until enroll succeeds",
            existing: enrolledHost.merging(["etc/ferry/root.json": "{}"]) { $1 },
            extraArguments: ["--trust-root", "WORK/root.json", "--force"],
            withoutFlags: ["--trusted-key", "--threshold"],
            expectedLines: [
                "+ cp -p ROOT/etc/ferry/root.json ROOT/etc/ferry/root.json.before-enroll",
                "+ install -o root -g ferry -m 0640 WORK/root.json ROOT/etc/ferry/root.json",
                "+ rm -f ROOT/etc/ferry/root.json.before-enroll",
            ]
        ),
        DryRunCase(
            description: "--machine-identity ec2 reaches enroll",
            extraArguments: ["--machine-identity", "ec2"],
            expectedLines: ["+ chown ferry:ferry ROOT/var/lib/ferry/machine.json"],
            present: [" --poll-seconds 5 --machine-identity ec2 --token-file - <redacted token on stdin>\n"]
        ),
        DryRunCase(
            description: "binary and unit already installed and identical: skipped",
            existing: [
                "usr/local/bin/ferry-agent": "#!/bin/sh\necho fake agent\n",
                "etc/systemd/system/ferry-agent.service": "",  // replaced by the real unit's text below
            ],
            expectedLines: [
                "install-agent: skip: ROOT/usr/local/bin/ferry-agent is up to date",
                "install-agent: skip: ROOT/etc/systemd/system/ferry-agent.service is up to date",
            ],
            absent: ["+ install -o root -g root -m 0755", "+ install -o root -g root -m 0644"]
        ),
    ]

    @Test(arguments: dryRunCases)
    func dryRunPrintsThePlanAndChangesNothing(_ testCase: DryRunCase) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-deploy") { work in
            let root = work.appendingPathComponent("root")
            try Self.makeInputs(in: work)
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            for (relative, content) in testCase.existing {
                let file = root.appendingPathComponent(relative)
                try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                let text = relative.hasSuffix("ferry-agent.service") ? try String(contentsOfFile: Self.agentUnit, encoding: .utf8) : content
                try text.write(to: file, atomically: true, encoding: .utf8)
            }
            let before = try TreeSnapshot.take(work.path)

            let substitute = { (line: String) in
                line.replacingOccurrences(of: "ROOT", with: root.path).replacingOccurrences(of: "WORK", with: work.path)
                    .replacingOccurrences(of: "DEPLOY", with: Self.deploy.path)
            }
            var sample: [String] = []
            var index = 0
            let given = Self.sampleArguments(work: work)
            while index < given.count {
                if testCase.withoutFlags.contains(given[index]) {
                    index += 2
                } else {
                    sample.append(given[index])
                    index += 1
                }
            }
            var arguments = sample + ["--dry-run", "--root", root.path] + testCase.extraArguments.map(substitute)
            if testCase.passToken { arguments += ["--enroll-token", Self.token] }
            let result = try await Command.run("bash", [Self.installScript] + arguments)

            #expect(result.status == 0, "stderr: \(result.stderr)")
            let lines = Set(result.stdout.split(separator: "\n").map(String.init))
            for expected in testCase.expectedLines.map(substitute) {
                #expect(lines.contains(expected), "missing line \(expected)\nstdout:\n\(result.stdout)")
            }
            for text in testCase.present.map(substitute) {
                #expect(result.stdout.contains(text), "missing \(text)\nstdout:\n\(result.stdout)")
            }
            for text in testCase.absent.map(substitute) {
                #expect(!result.stdout.contains(text), "unexpected \(text)\nstdout:\n\(result.stdout)")
            }
            #expect(!result.stdout.contains(Self.token) && !result.stderr.contains(Self.token), "the token was printed")
            #expect(try TreeSnapshot.take(work.path) == before, "the dry run changed files")
        }
    }

    @Test func dryRunReadsTheTokenFromAFileAndRedactsIt() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-deploy") { work in
            try Self.makeInputs(in: work)
            let tokenFile = work.appendingPathComponent("enroll-token").path
            try "\(Self.token)\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
            let root = work.appendingPathComponent("root").path
            let arguments = Self.sampleArguments(work: work) + ["--dry-run", "--root", root, "--enroll-token-file", tokenFile]
            let result = try await Command.run("bash", [Self.installScript] + arguments)
            #expect(result.status == 0, "stderr: \(result.stderr)")
            #expect(result.stdout.contains(" enroll --controller https://ferry.example:8443 "))
            #expect(result.stdout.contains("--token-file - <redacted token on stdin>\n"))
            #expect(!result.stdout.contains(Self.token) && !result.stderr.contains(Self.token))
            #expect(!FileManager.default.fileExists(atPath: root), "the dry run created the root")
        }
    }

    /// The unit runs the agent with the configuration the install script enrolls into.
    @Test func unitReadsTheConfigurationTheInstallScriptWrites() throws {
        let unit = try Self.serviceSection(Self.agentUnit)
        let execStart = try #require(unit["ExecStart"]?.first)
        #expect(execStart == "/usr/local/bin/ferry-agent run --config /etc/ferry/agent.json")
        let script = try String(contentsOfFile: Self.installScript, encoding: .utf8)
        #expect(script.contains("CONFIG=$ETC_DIR/agent.json") && script.contains("ETC_DIR=$ROOT/etc/ferry"))
        #expect(script.contains("INSTALLED_BINARY=$ROOT/usr/local/bin/ferry-agent"))
        #expect(unit["User"] == ["ferry"] && script.contains("AGENT_USER=ferry"))
        #expect(unit["ReadWritePaths"] == ["/var/lib/ferry"] && script.contains("STATE_DIR=/var/lib/ferry"))
    }

    // MARK: - install-agent.sh refusals

    struct RefusalCase: Sendable, CustomStringConvertible {
        var description: String
        /// Arguments replacing (by flag name) or added to the sample ones; a nil value removes the flag.
        var changes: [(flag: String, value: String?)]
        var extra: [String] = []
        var dryRun = true
        var message: String
    }

    static let refusalCases: [RefusalCase] = [
        RefusalCase(description: "no controller", changes: [("--controller", nil)], message: "--controller is required"),
        RefusalCase(
            description: "controller not http(s)",
            changes: [("--controller", "ftp://ferry.example")],
            message: "--controller must be an http:// or https:// URL, got 'ftp://ferry.example'"
        ),
        RefusalCase(description: "no service", changes: [("--service", nil)], message: "at least one --service is required"),
        RefusalCase(
            description: "a PM2 home the agent's unit cannot write",
            changes: [("--process-manager", "pm2")],
            extra: ["--pm2", "/bin/true", "--pm2-home", "/srv/.pm2"],
            message: "--pm2-home must be a directory named .pm2 under /var/lib/ferry"
        ),
        RefusalCase(
            description: "a PM2 home that climbs out of the state directory",
            changes: [("--process-manager", "pm2")],
            extra: ["--pm2", "/bin/true", "--pm2-home", "/var/lib/ferry/../../srv/.pm2"],
            message: "--pm2-home must not hold . or .. components"
        ),
        RefusalCase(
            description: "a PM2 home pm2 startup cannot name",
            changes: [("--process-manager", "pm2")],
            extra: ["--pm2", "/bin/true", "--pm2-home", "/var/lib/ferry/pm2"],
            message: "--pm2-home must be a directory named .pm2 under /var/lib/ferry"
        ),
        RefusalCase(
            description: "bad service name",
            changes: [("--service", "Web_1")],
            message: "--service 'Web_1' must match"
        ),
        RefusalCase(
            description: "no trusted key",
            changes: [("--trusted-key", nil)],
            message: "at least one --trusted-key (or a signed --trust-root) is required"
        ),
        RefusalCase(
            description: "a trust root and trusted keys",
            changes: [("--threshold", nil)],
            extra: ["--trust-root", "{work}/root.json"],
            message: "give either --trust-root or --trusted-key/--threshold, not both: the root names its keys and thresholds"
        ),
        RefusalCase(
            description: "a trust root and a threshold",
            changes: [("--trusted-key", nil)],
            extra: ["--trust-root", "{work}/root.json"],
            message: "give either --trust-root or --trusted-key/--threshold, not both: the root names its keys and thresholds"
        ),
        RefusalCase(
            description: "missing trust root file",
            changes: [("--trusted-key", nil), ("--threshold", nil)],
            extra: ["--trust-root", "/nonexistent/root.json"],
            message: "--trust-root /nonexistent/root.json: no such readable file"
        ),
        RefusalCase(
            description: "missing CA file",
            changes: [],
            extra: ["--ca-file", "/nonexistent/ca.pem"],
            message: "--ca-file /nonexistent/ca.pem: no such readable file"
        ),
        RefusalCase(
            description: "missing key file",
            changes: [("--trusted-key", "/nonexistent/ops.pub")],
            message: "--trusted-key /nonexistent/ops.pub: no such readable file"
        ),
        RefusalCase(
            description: "threshold above the keys",
            changes: [("--threshold", "3")],
            message: "--threshold 3 is more than the 2 trusted key(s)"
        ),
        RefusalCase(
            description: "threshold zero",
            changes: [("--threshold", "0")],
            message: "--threshold must be between 1 and 64, got '0'"
        ),
        RefusalCase(
            description: "unknown process manager",
            changes: [("--process-manager", "systemd")],
            message: "--process-manager must be auto, pm2 or builtin, got 'systemd'"
        ),
        RefusalCase(
            description: "poll seconds out of range",
            changes: [("--poll-seconds", "0")],
            message: "--poll-seconds must be between 1 and 3600, got '0'"
        ),
        RefusalCase(
            description: "unknown machine identity",
            changes: [],
            extra: ["--machine-identity", "hostname"],
            message: "--machine-identity must be machine-id, ec2 or none, got 'hostname'"
        ),
        RefusalCase(
            description: "missing binary",
            changes: [("--binary", "/nonexistent/ferry-agent")],
            message: "--binary /nonexistent/ferry-agent: no such executable file"
        ),
        RefusalCase(
            description: "a binary that does not start on this host (built against a Swift runtime the host lacks)",
            changes: [("--binary", "{work}/broken-agent")],
            message:
                "--binary {work}/broken-agent does not run on this host: broken-agent: error while loading shared libraries: libswiftCore.so"
        ),
        RefusalCase(
            description: "token twice",
            changes: [],
            extra: ["--enroll-token-file", "/dev/null"],
            message: "give --enroll-token or --enroll-token-file, not both"
        ),
        RefusalCase(
            description: "no token on a host that is not enrolled",
            changes: [("--enroll-token", nil)],
            message: "--enroll-token or --enroll-token-file is required to enroll"
        ),
        RefusalCase(
            description: "--replace without a token",
            changes: [("--enroll-token", nil)],
            extra: ["--replace"],
            message: "--replace needs an operator token: give it with --enroll-token or --enroll-token-file"
        ),
        RefusalCase(description: "--root for real", changes: [], dryRun: false, message: "--root is only for --dry-run plans"),
        RefusalCase(description: "unknown flag", changes: [], extra: ["--colour"], message: "unknown argument '--colour' (see --help)"),
        RefusalCase(description: "flag without value", changes: [], extra: ["--service"], message: "--service needs a value"),
    ]

    @Test(arguments: refusalCases)
    func installScriptRefusesBadFlags(_ testCase: RefusalCase) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-deploy") { work in
            try Self.makeInputs(in: work)
            var arguments = Self.sampleArguments(work: work) + ["--enroll-token", Self.token]
            for change in testCase.changes {
                var kept: [String] = []
                var index = 0
                var replaced = false
                while index < arguments.count {
                    if arguments[index] == change.flag {
                        if let value = change.value, !replaced {
                            kept += [change.flag, value.replacingOccurrences(of: "{work}", with: work.path)]
                        }
                        replaced = true
                        index += 2
                    } else {
                        kept.append(arguments[index])
                        index += 1
                    }
                }
                arguments = kept
            }
            arguments +=
                ["--root", work.appendingPathComponent("root").path] + (testCase.dryRun ? ["--dry-run"] : [])
                + testCase.extra.map { $0.replacingOccurrences(of: "{work}", with: work.path) }
            let before = try TreeSnapshot.take(work.path)
            let result = try await Command.run("bash", [Self.installScript] + arguments)
            #expect(result.status == 2)
            let message = testCase.message.replacingOccurrences(of: "{work}", with: work.path)
            #expect(result.stderr.contains("install-agent: \(message)"), "stderr: \(result.stderr)")
            #expect(!result.stdout.contains(Self.token) && !result.stderr.contains(Self.token))
            #expect(try TreeSnapshot.take(work.path) == before)
        }
    }

    // MARK: - systemd units

    struct UnitCase: Sendable, CustomStringConvertible {
        var description: String
        var path: String
        var required: [String: String]
        var forbidden: [String]
    }

    static let unitCases: [UnitCase] = [
        UnitCase(
            description: "ferry-agent.service",
            path: agentUnit,
            required: [
                "KillMode": "process", "Restart": "always", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ReadWritePaths": "/var/lib/ferry", "PrivateTmp": "yes", "User": "ferry", "ProtectHome": "yes",
                // A copy of another machine's enrolment (MachineCheck.copyExitStatus) is not restarted every 5 s.
                "RestartPreventExitStatus": "\(MachineCheck.copyExitStatus)",
            ],
            // V8 needs writable+executable memory; RemoveIPC would strip the IPC of apps that outlive the agent.
            forbidden: ["MemoryDenyWriteExecute", "RemoveIPC", "DynamicUser"]
        ),
        UnitCase(
            description: "ferry-controller.service",
            path: controllerUnit,
            required: [
                "Restart": "always", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ReadWritePaths": "/var/lib/ferry-controller", "PrivateTmp": "yes", "User": "ferry-controller",
                "StateDirectory": "ferry-controller", "ExecStart": "/usr/local/bin/ferry-controller serve",
                // `systemctl reload` reloads the TLS certificate.
                "ExecReload": "/bin/kill -HUP $MAINPID",
            ],
            forbidden: ["KillMode"]
        ),
    ]

    @Test(arguments: unitCases)
    func unitCarriesTheHardening(_ testCase: UnitCase) throws {
        let section = try Self.serviceSection(testCase.path)
        for (key, value) in testCase.required {
            #expect(section[key] == [value], "\(key): \(section[key] ?? [])")
        }
        for key in testCase.forbidden {
            #expect(section[key] == nil, "\(key) must not be set")
        }
    }

    static let systemdAnalyze = ExecutableLookup.find("systemd-analyze")

    @Test(.enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed: the units are not verified"))
    func unitsPassSystemdAnalyzeVerify() async throws {
        let findings = try await Self.verify([
            (Self.agentUnit, "/usr/local/bin/ferry-agent", TestPaths.executable("ferry-agent")),
            (Self.controllerUnit, "/usr/local/bin/ferry-controller", TestPaths.executable("ferry-controller")),
        ])
        #expect(findings.isEmpty, "systemd-analyze verify:\n\(findings.joined(separator: "\n"))")
    }

    /// The check above can fail: a misspelt value is reported.
    @Test(.enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed: the units are not verified"))
    func systemdAnalyzeVerifyReportsAMistake() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-deploy") { work in
            let broken = work.appendingPathComponent("broken").path
            try FileManager.default.createDirectory(atPath: broken, withIntermediateDirectories: true)
            let text = try String(contentsOfFile: Self.agentUnit, encoding: .utf8)
                .replacingOccurrences(of: "KillMode=process", with: "KillMode=proces")
            let unit = "\(broken)/ferry-agent.service"
            try text.write(toFile: unit, atomically: true, encoding: .utf8)
            let findings = try await Self.verify([(unit, "/usr/local/bin/ferry-agent", TestPaths.executable("ferry-agent"))])
            #expect(findings.contains { $0.contains("kill mode") || $0.contains("KillMode") }, "\(findings)")
        }
    }

    // MARK: - Helpers

    /// Key files, a stand-in binary: what the sample arguments name; a CA bundle and a trust root for the rows that
    /// give them (the script copies them, it does not parse them).
    static func makeInputs(in work: URL) throws {
        for name in ["alice.pub", "bob.pub"] {
            try "-----BEGIN PUBLIC KEY-----\n\(name)\n-----END PUBLIC KEY-----\n"
                .write(to: work.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"
            .write(to: work.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        try "{\"signed\":{},\"signatures\":[]}\n".write(to: work.appendingPathComponent("root.json"), atomically: true, encoding: .utf8)
        let binary = work.appendingPathComponent("ferry-agent").path
        try "#!/bin/sh\necho fake agent\n".write(toFile: binary, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: binary)
        // What the loader says when the Swift runtime a binary was linked against is missing.
        let broken = work.appendingPathComponent("broken-agent").path
        try "#!/bin/sh\necho 'broken-agent: error while loading shared libraries: libswiftCore.so: cannot open shared object file' >&2\nexit 127\n"
            .write(toFile: broken, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: broken)
    }

    static func sampleArguments(work: URL) -> [String] {
        [
            "--controller", "https://ferry.example:8443", "--service", "web", "--service", "api",
            "--trusted-key", work.appendingPathComponent("alice.pub").path,
            "--trusted-key", work.appendingPathComponent("bob.pub").path,
            "--threshold", "2", "--binary", work.appendingPathComponent("ferry-agent").path,
            "--process-manager", "builtin", "--poll-seconds", "5",
        ]
    }

    /// The `[Service]` section of a unit file: key → values in order (a key may repeat).
    static func serviceSection(_ path: String) throws -> [String: [String]] {
        var section = ""
        var values: [String: [String]] = [:]
        for raw in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") {
                section = line
                continue
            }
            guard section == "[Service]", let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals]), default: []].append(String(line[line.index(after: equals)...]))
        }
        return values
    }

    /// Runs `systemd-analyze verify` on copies of the units whose ExecStart binary is swapped for the built one (it
    /// checks that the command exists) and returns the lines of its output that concern them.
    static func verify(_ units: [(path: String, binary: String, replacement: String)]) async throws -> [String] {
        try await TestPaths.withTemporaryDirectory("ferry-deploy") { work in
            var copies: [String] = []
            for unit in units {
                let copy = work.appendingPathComponent(URL(fileURLWithPath: unit.path).lastPathComponent).path
                let text = try String(contentsOfFile: unit.path, encoding: .utf8)
                    .replacingOccurrences(of: "ExecStart=\(unit.binary)", with: "ExecStart=\(unit.replacement)")
                try text.write(toFile: copy, atomically: true, encoding: .utf8)
                // systemd refuses a world-writable unit, and a copy written here once came out world-writable in CI
                // (its mode comes from the test process's umask as Foundation's atomic write reads it, which other
                // tests running at the same time may have disturbed; not pinned down). The mode is set here instead.
                try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: copy)
                copies.append(copy)
            }
            let result = try await Command.run("systemd-analyze", ["verify"] + copies)
            let names = copies.map { URL(fileURLWithPath: $0).lastPathComponent }
            var findings = (result.stdout + "\n" + result.stderr).split(separator: "\n").map(String.init)
                .filter { line in names.contains { line.contains($0) } }
            if result.status != 0 && findings.isEmpty {
                findings.append("exit status \(result.status): \(result.stderr)")
            }
            return findings
        }
    }
}
