/*
 * One headless live session on QuPath's own classes, for test_qupath_live.py: a real ImageData (QuPath's
 * OpenSlide server) and its PathObjectHierarchy, org.slidesam.qupath.LiveHierarchy from the client jar and
 * the real server. Points are added, dragged, removed and deleted with the calls and hierarchy events that
 * QuPath 0.6.0's Points tool and delete command make (qupath-gui-fx: PointsToolEventHandler.mousePressed /
 * mouseDragged / mouseReleased / handleAltClick, GuiTools.promptToRemoveSelectedObjects), each on one "UI"
 * thread as in QuPath. After each step the prompts and the result annotations, as the hierarchy holds them,
 * are recorded; the steps are written as JSON to OUT.
 *
 * Usage (the client jar on the class path, see qupath_support.run_groovy): live_hierarchy_session.groovy ADDRESS SLIDE SLIDE_MAP_RULE OUT X Y NEGATIVE_X
 *        (X, Y: a point on the object; NEGATIVE_X: left of it, off the object, at the same Y)
 */
import com.google.gson.GsonBuilder
import java.awt.image.BufferedImage
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.locationtech.jts.io.WKTWriter
import org.slidesam.client.ConnectOptions
import org.slidesam.client.Rect
import org.slidesam.client.SlidesamClient
import org.slidesam.client.live.FovSettings
import org.slidesam.client.live.LiveSettings
import org.slidesam.client.live.SlideMap
import org.slidesam.qupath.LiveHierarchy
import org.slidesam.qupath.ServerImages
import qupath.lib.geom.Point2
import qupath.lib.images.ImageData
import qupath.lib.images.servers.ImageServer
import qupath.lib.images.servers.ImageServers
import qupath.lib.objects.PathAnnotationObject
import qupath.lib.objects.PathObject
import qupath.lib.objects.PathObjects
import qupath.lib.objects.PathROIObject
import qupath.lib.objects.classes.PathClass
import qupath.lib.objects.hierarchy.PathObjectHierarchy
import qupath.lib.regions.ImagePlane
import qupath.lib.roi.ROIs

def (address, slide, rule, out) = args[0..3]
def (double x, double y, double negativeX) = args[4..6].collect { it as double }

ImageServer<BufferedImage> server = ImageServers.buildServer(new File(slide).toURI())
ImageData<BufferedImage> imageData = new ImageData<>(server)
PathObjectHierarchy hierarchy = imageData.getHierarchy()
ImagePlane plane = ImagePlane.getDefaultPlane()
ExecutorService fx = Executors.newSingleThreadExecutor()  // QuPath's UI thread
def onFx = { Closure edit -> fx.submit(edit as java.util.concurrent.Callable).get() }
def problems = Collections.synchronizedList([])
def client = new SlidesamClient(ConnectOptions.to(address))
def live = new LiveHierarchy(hierarchy, plane, client, ServerImages.of(server), LiveSettings.BRIDGE, SlideMap.parse([rule]),
        fx, { new Rect(0, 0, server.getWidth(), server.getHeight()) }, { String message -> problems << message })
onFx { live.start() }

// ---- What QuPath's Points tool and delete command do -------------------------------------------------------
PathClass positive = PathClass.fromString("SAM positive"), negative = PathClass.fromString("SAM negative")
/** A click with no points annotation selected: a new one with the auto-set class; the mouse is released. */
def click = { PathClass pathClass, double px, double py ->
    PathObject created = PathObjects.createAnnotationObject(ROIs.createPointsROI(px, py, plane), pathClass)
    hierarchy.addObject(created)
    hierarchy.updateObject(created, false)
    created
}
/** A click next to the selected points annotation: one more point (an event "still changing"), then released. */
def addPoint = { PathROIObject points, double px, double py ->
    points.setROI(ROIs.createPointsROI(points.getROI().getAllPoints() + [new Point2(px, py)], plane))
    hierarchy.updateObject(points, true)
    hierarchy.updateObject(points, false)
}
/** Dragging point i: the ROI changes on every mouse move without an event; the event comes on release. */
def drag = { PathROIObject points, int i, double px, double py ->
    def moved = new ArrayList<Point2>(points.getROI().getAllPoints())
    moved[i] = new Point2(px, py)
    points.setROI(ROIs.createPointsROI(moved, plane))
}
def release = { PathObject points -> hierarchy.updateObject(points, false) }
/** Delete (the key or Objects > Delete) on the selected objects. */
def delete = { PathObject... selected -> hierarchy.removeObjects(selected as List, true) }

// ---- The session --------------------------------------------------------------------------------------------
def wkt = new WKTWriter()
def steps = []
def record = { String name, LiveHierarchy session = live, PathObjectHierarchy objects = hierarchy ->
    session.awaitIdle()
    onFx {
        def annotations = objects.getAnnotationObjects()
        def isResult = { PathObject p -> p.getPathClass()?.toString() == "Tumor" }
        steps << [
            step: name,
            prompts: annotations.findAll { !isResult(it) }.collect { PathObject p ->
                [class: p.getPathClass().toString(), name: p.getName(), points: p.getROI().getAllPoints().collect { [it.getX(), it.getY()] }]
            },
            results: annotations.findAll(isResult).collect { PathObject p ->
                def a = p as PathAnnotationObject
                [id: a.getID().toString(), name: a.getName(), class: a.getPathClass().toString(), description: a.getDescription(),
                 locked: a.isLocked(), roi: a.getROI().getRoiName(), wkt: wkt.write(a.getROI().getGeometry()),
                 measurements: new LinkedHashMap(a.getMeasurementList().asMap())]  // a copy: asMap() is a live view
            },
            problems: new ArrayList(problems),
        ]
        problems.clear()
    }
}

def first = onFx { click(positive, x, y) }
record("click")
onFx { addPoint(first, x + 250, y - 50) }
record("second point")
onFx { drag(first, 0, x - 150, y + 50); drag(first, 0, x - 300, y + 100) }
record("dragging")
onFx { release(first) }
record("dragged")
def off = onFx { click(negative, negativeX, y) }
record("negative")
onFx { delete(off) }
record("negative deleted")
onFx { live.undoLast() }
record("undo key")
onFx { delete(first) }
record("prompts deleted")
onFx { hierarchy.getAnnotationObjects().find { it.getPathClass()?.toString() == "Tumor" }.setLocked(true) }
onFx { click(positive, x, y) }
record("locked result")

// The GUI's default field of view (FOV_MODE SELECTION_OR_VIEW): the selected area annotation holding the points.
PathObjectHierarchy viewed = new ImageData<>(server).getHierarchy()
def viewLive = new LiveHierarchy(viewed, plane, client, ServerImages.of(server),
        LiveSettings.BRIDGE.withFov(FovSettings.BRIDGE.withMode(FovSettings.Mode.SELECTION_OR_VIEW)), SlideMap.parse([rule]),
        fx, { new Rect(0, 0, server.getWidth(), server.getHeight()) }, { String message -> problems << message })
onFx { viewLive.start() }
def around = PathObjects.createAnnotationObject(ROIs.createRectangleROI(Math.round(x) - 400, Math.round(y) - 300, 800, 600, plane))
onFx {
    viewed.addObject(around)
    viewed.getSelectionModel().setSelectedObject(around)
    PathObject inside = PathObjects.createAnnotationObject(ROIs.createPointsROI(x, y, plane), positive)
    viewed.addObject(inside)
    viewed.updateObject(inside, false)
}
record("in the selection", viewLive, viewed)

viewLive.close()
live.close()
client.close()
fx.shutdown()
new File(out).text = new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(steps)
