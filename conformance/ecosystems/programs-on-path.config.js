// Scripts that are programs on PATH, as PM2 finds them with `which`, and a command with spaces (bash -c).
module.exports = {
  apps: [
    { name: 'npm-start', script: 'npm', args: 'start' },
    { name: 'idle', script: 'sleep', args: ['600'] },
    { script: 'npm run start' },
  ],
};
