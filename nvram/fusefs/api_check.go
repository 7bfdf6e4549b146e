package fusefs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// What the root directory serves.
var (
	_ gofs.InodeEmbedder = (*rootNode)(nil)
	_ gofs.NodeGetattrer = (*rootNode)(nil)
	_ gofs.NodeSetattrer = (*rootNode)(nil)
	_ gofs.NodeStatfser  = (*rootNode)(nil)
	_ gofs.NodeReaddirer = (*rootNode)(nil)
	_ gofs.NodeLookuper  = (*rootNode)(nil)
	_ gofs.NodeCreater   = (*rootNode)(nil)
	_ gofs.NodeUnlinker  = (*rootNode)(nil)
	_ gofs.NodeRenamer   = (*rootNode)(nil)
	_ gofs.NodeFsyncer   = (*rootNode)(nil)
	_ gofs.NodeMkdirer   = (*rootNode)(nil)
	_ gofs.NodeMknoder   = (*rootNode)(nil)
	_ gofs.NodeSymlinker = (*rootNode)(nil)
	_ gofs.NodeLinker    = (*rootNode)(nil)
	_ gofs.NodeRmdirer   = (*rootNode)(nil)
)

// What an entry's file serves.
var (
	_ gofs.InodeEmbedder = (*entryNode)(nil)
	_ gofs.NodeGetattrer = (*entryNode)(nil)
	_ gofs.NodeSetattrer = (*entryNode)(nil)
	_ gofs.NodeOpener    = (*entryNode)(nil)
	_ gofs.NodeReader    = (*entryNode)(nil)
	_ gofs.NodeWriter    = (*entryNode)(nil)
	_ gofs.NodeFlusher   = (*entryNode)(nil)
	_ gofs.NodeFsyncer   = (*entryNode)(nil)
	_ gofs.NodeReleaser  = (*entryNode)(nil)
)
