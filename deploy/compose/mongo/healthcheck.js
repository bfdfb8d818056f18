// The mongo container's health check (compose.yaml), run by mongosh over TLS on localhost: healthy once
// this member is the replica set's writable primary. It also bootstraps:
// - the replica set: initiated on the first start, logged in as root (which the image's entrypoint made
//   on the empty volume), or, on a volume from before users existed, under the localhost exception;
// - root on such a volume: created under the localhost exception, which holds only while no user exists.
// Once it saw root in place it checks only `hello` (no login): a marker in the container's /tmp says so.
// Nothing here prints a password.
const fs = require('fs');
const marker = '/tmp/pai-mongo/root-checked';
const hello = db.hello();
if (hello.isWritablePrimary && fs.existsSync(marker)) quit(0);

const user = process.env.MONGO_INITDB_ROOT_USERNAME;
const pwd = process.env.MONGO_INITDB_ROOT_PASSWORD;
const admin = db.getSiblingDB('admin');
let loggedIn = false;
try {
  admin.auth(user, pwd);
  loggedIn = true;
} catch (e) {
  // No such user yet (a volume from before users), or root's password was rotated and mongo-users has
  // not set it yet: the steps below work without it or are not needed.
}
if (!hello.setName) {
  rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'mongo:27017'}]});
  quit(1);  // healthy at a later check, once elected
}
if (!hello.isWritablePrimary) quit(1);
if (!loggedIn) {
  try {
    admin.createUser({user: user, pwd: pwd, roles: ['root']});
    print('created ' + user + ' under the localhost exception');
  } catch (e) {
    // Users exist: the exception is closed, and mongo-users brings root's password up to date.
    if (e.codeName !== 'Unauthorized') throw e;
  }
}
fs.writeFileSync(marker, '');
quit(0);
