// swift-tools-version:6.2
import PackageDescription

// Built and tested on Linux only (Debian 12, Swift 6.3): the agent reads /proc, drives Linux process groups and imports
// Glibc. No Apple platform is declared because none is built or tested.
let package = Package(
    name: "ferry",
    products: [
        .executable(name: "ferry-controller", targets: ["Controller"]),
        .executable(name: "ferry-agent", targets: ["Agent"]),
        .library(name: "Shared", targets: ["Shared"]),
        // `scripts/bench-json.sh` builds it with `swift build -c release --product JSONBenchmark`.
        .executable(name: "JSONBenchmark", targets: ["JSONBenchmark"]),
        // `scripts/bench-fleet` builds it with `swift build -c release --product FleetBench`; the fleet CI test runs it.
        .executable(name: "FleetBench", targets: ["FleetBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/vapor/sql-kit", from: "3.36.0"),
        .package(url: "https://github.com/vapor/sqlite-kit", from: "4.5.2"),
        // The HA store (several controllers on one PostgreSQL): SQLKit over postgres-nio's pooled client.
        .package(url: "https://github.com/vapor/postgres-kit", from: "2.17.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // Used directly (not only through Hummingbird), so declared.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        // Native TLS for `serve` (BoringSSL inside, prefixed symbols: coexists with the system OpenSSL) and the HTTP
        // part types its connection guard reads.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // No library to link: the loader's list of loaded objects in libc (`dl_iterate_phdr`, declared in its shim.h).
        .systemLibrary(name: "CLoader"),
        .systemLibrary(
            name: "CArchive",
            pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"])]
        ),
        .target(
            name: "Shared",
            dependencies: [
                "CLoader",
                "COpenSSL",
                "CCurl",
            ]
        ),
        .executableTarget(
            name: "Controller",
            dependencies: [
                "Shared",
                // Reads the artifact's file tree so publish and plan check every script before shipping.
                "CArchive",
                // Verifies EC2 instance identity documents (PKCS #7) at enrolment.
                "COpenSSL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
        // The builtin supervisor: its daemon (`ferry-agent supervisor`), the client the agent drives it through
        // (`BuiltinProcessManager`, a `ProcessManager`) and the socket protocol between them. It does not depend on the
        // agent: what both need (`AppSpec`, `ProcessManager`) lives in Shared.
        .target(
            name: "Supervisor",
            dependencies: [
                "Shared",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "Agent",
            dependencies: [
                "Shared",
                // Downloads go through Shared's HTTPClient; the agent itself calls no libcurl function.
                "Supervisor",
                "CArchive",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // No Yams here: it imports full Foundation (about 7 MB of RSS); the agent reads its YAML config with
                // the small subset parser in Agent/Config.
            ]
        ),
        // `scripts/bench-json.sh`: times JSONValue.parse in a release build against a baseline in the same run.
        .executableTarget(
            name: "JSONBenchmark",
            dependencies: ["Shared"],
            path: "Benchmarks/JSONBenchmark"
        ),
        // `scripts/bench-fleet`: thousands of simulated agents (NIO, one connection each) against a real controller.
        .executableTarget(
            name: "FleetBench",
            dependencies: [
                "Shared", "CArchive",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Benchmarks/FleetBench"
        ),
        .target(
            name: "TestSupport",
            dependencies: [
                "Shared",
                // ArchiveBuilder: writes hostile archives for the agent's extractor and the controller's ArtifactTree tests.
                "CArchive",
                // RecordingProxy: a reverse proxy in front of a live controller.
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "SharedTests",
            dependencies: ["Shared", "TestSupport"],
            resources: [.copy("Fixtures")]
        ),
        // ControllerTests and AgentTests also run the built `ferry-controller` and `ferry-agent` (TestPaths.executable):
        // SwiftPM cannot declare that, `swift build --build-tests` builds them, and a test that finds one missing fails
        // naming that command.
        .testTarget(
            name: "ControllerTests",
            dependencies: [
                "Controller", "Shared", "TestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The supervisor's unit, protocol and daemon tests; the daemon tests run the built `ferry-agent supervisor`.
        .testTarget(
            name: "SupervisorTests",
            dependencies: [
                "Supervisor", "Shared", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AgentTests",
            dependencies: [
                "Agent", "Shared", "Supervisor", "TestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Fixtures")]
        ),
    ]
)
