/// Size limits of Ferry's documents. They bound what a hostile controller or publisher can make an agent parse.
package enum Limits {
    /// Largest release payload, in bytes.
    package static let releasePayloadBytes = 1 << 20
    /// Largest encoded envelope, in bytes (the base64 payload plus signatures).
    package static let envelopeBytes = (1 << 20) * 3 / 2 + 64 * 1024
    /// Most signatures one envelope may carry.
    package static let signatures = 16
    /// Most entries of one env map.
    package static let envEntries = 512
    /// Longest env variable name.
    package static let envKeyLength = 256
    /// Longest env value, in bytes.
    package static let envValueLength = 32 * 1024
    /// Longest `NAME=value` string (with its terminating NUL) Linux passes to a new process: `MAX_ARG_STRLEN`, 32
    /// pages. `execve` refuses a longer one (`E2BIG`), so an app given it never starts.
    package static let execStringBytes = 32 * 4096
    /// Total bytes (names + values) of one env map.
    package static let envTotalBytes = 256 * 1024
    /// Most PM2 apps in one release.
    package static let apps = 64
    /// Longest URL.
    package static let urlLength = 2048
    /// Longest path-like value (`script`).
    package static let pathLength = 1024
    /// Longest free-form short string (`version`, app options).
    package static let shortString = 256
    /// Most items of a list option (`args`).
    package static let listItems = 256
}
