package nvram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/errs"
)

var testKey = bytes.Repeat([]byte{0x5a}, 32)

// newImage formats an in-memory CocoonFS image and opens it read-write.
func newImage(t testing.TB, size int64) (*blockdev.Memory, *cocoonfs.FS) {
	t.Helper()
	dev := blockdev.NewMemory(size, 512)
	f, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{NoRandomizeUnallocated: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = cocoonfs.Open(dev, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return dev, f
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	dev, fsys := newImage(t, 1<<20)
	if _, err := Open(fsys, nil); !errors.Is(err, ErrNoStore) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open without a directory = %v, want ErrNoStore", err)
	}
	s, err := Open(fsys, &Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("new store lists %v, %v", list, err)
	}
	// Open never writes: the directory appears with the first update.
	if _, err := fsys.Stat(DirectoryInode); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open with Create wrote the directory: %v", err)
	}

	perm := bytes.Repeat([]byte{1, 2, 3}, 4000)
	if err := s.Put(ctx, &Entry{Name: "tpm2-00.permall", Type: TypeTPM, Data: perm,
		Optional: []Attribute{OctetsAttribute("origin", []byte("test")), FlagAttribute("x-flag")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, &Entry{Name: "vars", Type: "uefi", Data: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	e, err := s.Get("tpm2-00.permall")
	if err != nil || !bytes.Equal(e.Data, perm) || e.Type != TypeTPM || len(e.Optional) != 2 {
		t.Fatalf("Get = %+v, %v", e, err)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].Name != "tpm2-00.permall" || list[0].Size != int64(len(perm)) || list[1].Name != "vars" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if st, err := fsys.Stat(DirectoryInode); err != nil || st.Flags != 0 {
		t.Fatalf("directory inode: %+v, %v", st, err)
	}

	// Replace, then a failed batch changes nothing.
	if err := s.Put(ctx, &Entry{Name: "vars", Type: "uefi", Data: []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	before, _ := fsys.ReadFile(DirectoryInode)
	counter := fsys.UpdateCounter()
	boom := errors.New("boom")
	err = s.Update(ctx, func(d *Directory) error {
		if err := d.Remove("vars"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	if err := s.Remove(ctx, "vars", "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove with a missing name = %v", err)
	}
	// An update that changes nothing commits nothing.
	if err := s.Update(ctx, func(d *Directory) error { return nil }); err != nil {
		t.Fatal(err)
	}
	after, _ := fsys.ReadFile(DirectoryInode)
	if !bytes.Equal(before, after) || fsys.UpdateCounter().Cmp(counter) != 0 {
		t.Fatalf("failed or empty updates changed the image")
	}
	if e, err := s.Get("vars"); err != nil || string(e.Data) != "v2" {
		t.Fatalf("vars = %v, %v", e, err)
	}

	// A batch: several entries in one transaction.
	err = s.Update(ctx, func(d *Directory) error {
		for i := 0; i < 5; i++ {
			if err := d.Put(&Entry{Name: fmt.Sprintf("batch-%d", i), Type: "data", Data: []byte{byte(i)}}); err != nil {
				return err
			}
		}
		return d.Remove("vars")
	})
	if err != nil {
		t.Fatal(err)
	}
	if fsys.UpdateCounter().Cmp(counter) == 0 {
		t.Fatalf("the batch did not commit")
	}
	if list, _ := s.List(); len(list) != 6 {
		t.Fatalf("after the batch: %+v", list)
	}

	// Reopen the image from its bytes: everything is there.
	fsys.Close()
	f2, err := cocoonfs.Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	s2, err := Open(f2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s2.Get("tpm2-00.permall"); err != nil || !bytes.Equal(e.Data, perm) {
		t.Fatalf("after reopening: %v", err)
	}
	// Read-only image: reads work, updates are refused.
	if err := s2.Put(ctx, &Entry{Name: "x", Type: "data"}); !errors.Is(err, cocoonfs.ErrReadOnlyFS) {
		t.Fatalf("Put on a read-only image = %v", err)
	}
	// A wrong key is refused by cocoonfs.Open, before the store is reached.
	if _, err := cocoonfs.Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), []byte("wrong key, 32 bytes long, really"), nil); !errors.Is(err, errs.ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
}

// TestStoreForeignDirectory: a directory written by another writer (with
// an unknown mandatory attribute) is kept byte for byte through updates of
// other entries, and the unusable entry can still be replaced or removed.
func TestStoreForeignDirectory(t *testing.T) {
	ctx := context.Background()
	_, fsys := newImage(t, 1<<20)
	tx, _ := fsys.Begin()
	if err := tx.WriteFile(DirectoryInode, foreignDir, 0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := Open(fsys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("future"); !errors.Is(err, ErrUnknownMandatory) {
		t.Fatalf("Get(future) = %v", err)
	}
	if err := s.Put(ctx, &Entry{Name: "new", Type: "data", Data: []byte("n")}); err != nil {
		t.Fatal(err)
	}
	dir, _ := fsys.ReadFile(DirectoryInode)
	for _, raw := range [][]byte{entryA, entryB, entryC, entryD} {
		if !bytes.Contains(dir, raw) {
			t.Errorf("an untouched entry changed")
		}
	}
	if err := s.Put(ctx, &Entry{Name: "future", Type: "data", Data: []byte("replaced")}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Get("future"); err != nil || string(e.Data) != "replaced" {
		t.Fatalf("replaced entry: %v, %v", e, err)
	}
	if err := s.Remove(ctx, "future"); err != nil {
		t.Fatal(err)
	}

	// A malformed directory makes the store refuse to open (and so to
	// rewrite anything).
	tx, _ = fsys.Begin()
	tx.WriteFile(DirectoryInode, []byte{0x31, 0x80, 0x30}, 0)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(fsys, nil); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("Open on a malformed directory = %v", err)
	}
	if err := s.Put(ctx, &Entry{Name: "x", Type: "data"}); !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("Put on a malformed directory = %v", err)
	}
}

// TestStoreConcurrent: writers on several Stores of one image and readers
// at the same time (run with -race). Updates are serialized, so none is
// lost, and every snapshot parses.
func TestStoreConcurrent(t *testing.T) {
	ctx := context.Background()
	_, fsys := newImage(t, 4<<20)
	var wg sync.WaitGroup
	const writers, puts = 4, 10
	errc := make(chan error, writers*puts+100)
	for w := 0; w < writers; w++ {
		s, err := Open(fsys, &Options{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < puts; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				if err := s.Put(ctx, &Entry{Name: name, Type: "data", Data: []byte(name)}); err != nil {
					errc <- err
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < puts; i++ {
				if _, err := s.List(); err != nil {
					errc <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	s, _ := Open(fsys, nil)
	list, err := s.List()
	if err != nil || len(list) != writers*puts {
		t.Fatalf("%d entries, want %d (%v)", len(list), writers*puts, err)
	}
	for _, in := range list {
		if e, err := s.Get(in.Name); err != nil || string(e.Data) != in.Name {
			t.Errorf("%s: %v, %v", in.Name, e, err)
		}
	}
}

func TestStoreNoSpace(t *testing.T) {
	ctx := context.Background()
	_, fsys := newImage(t, 256<<10)
	s, _ := Open(fsys, &Options{Create: true})
	if err := s.Put(ctx, &Entry{Name: "small", Type: "data", Data: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	err := s.Put(ctx, &Entry{Name: "huge", Type: "data", Data: make([]byte, 1<<20)})
	if !errors.Is(err, errs.ErrNoSpace) {
		t.Fatalf("oversized Put = %v, want ErrNoSpace", err)
	}
	if list, _ := s.List(); len(list) != 1 {
		t.Fatalf("a failed Put changed the store: %+v", list)
	}
}
