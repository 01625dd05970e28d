// conformance: no-stand-ins
// A script that is neither in the release nor a program on PATH: PM2 says "Script not found", Ferry refuses to publish.
module.exports = { apps: [{ name: 'ghost', script: 'does-not-exist.js' }] };
