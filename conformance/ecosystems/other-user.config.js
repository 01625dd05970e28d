// Switching users: PM2 does it only as root and needs the user to exist; Ferry runs every app as the agent's user.
module.exports = {
  apps: [{ name: 'as-other', script: 'server.js', uid: 'ferry-conformance-no-such-user', gid: 'ferry-conformance-no-such-group', user: 'ferry-conformance-no-such-user' }],
};
