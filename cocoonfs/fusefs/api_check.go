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

// What a file serves.
var (
	_ gofs.InodeEmbedder = (*fileNode)(nil)
	_ gofs.NodeGetattrer = (*fileNode)(nil)
	_ gofs.NodeSetattrer = (*fileNode)(nil)
	_ gofs.NodeOpener    = (*fileNode)(nil)
	_ gofs.NodeReader    = (*fileNode)(nil)
	_ gofs.NodeWriter    = (*fileNode)(nil)
	_ gofs.NodeFlusher   = (*fileNode)(nil)
	_ gofs.NodeFsyncer   = (*fileNode)(nil)
	_ gofs.NodeReleaser  = (*fileNode)(nil)
)
