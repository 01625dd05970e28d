import Foundation
import TestSupport
import Testing

/// The tests that run `ferry-agent` and `ferry-controller` find them, or fail saying how to build them.
@Suite struct TestPathsTests {
    @Test func theBuiltBinariesAreFoundNextToTheTests() {
        for name in ["ferry-agent", "ferry-controller"] {
            #expect(FileManager.default.isExecutableFile(atPath: TestPaths.executable(name)), "\(name)")
        }
    }

    @Test func aMissingBinaryFailsTheTestNamingTheCommandThatBuildsIt() {
        withKnownIssue {
            _ = TestPaths.executable("ferry-not-built")
        } matching: { issue in
            issue.comments.contains { comment in
                comment.rawValue.contains("ferry-not-built is not built in \(TestPaths.productsDirectory.path)")
                    && comment.rawValue.contains("swift build --build-tests")
            }
        }
    }
}
