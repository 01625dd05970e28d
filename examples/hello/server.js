// A tiny HTTP service for the Ferry demo: answers with its version and the instance it runs on.
const http = require('http');
const fs = require('fs');
const path = require('path');

const version = fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim();
const port = Number(process.env.PORT || 3000);

http
  .createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`hello from ${process.env.INSTANCE_NAME || 'somewhere'}: version ${version}\n`);
  })
  .listen(port, '127.0.0.1', () => console.log(`hello ${version} listening on 127.0.0.1:${port}`));
